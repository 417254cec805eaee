"""Keys stay where a registration may write (issue #10): under its non-empty prefix (or,
go-zero, under the service name), never under the operator's bookkeeping, checked again
after rendering; values are text etcd can carry."""

from __future__ import annotations

import pytest

from etcd_registrar.formats import TemplateError, build_layout
from etcd_registrar.source import Registration
from tests.unit.builders import SAMPLE, registration_body
from tests.unit.test_source import DEFAULTS


def registration_error(spec: dict[str, object]) -> str | None:
    return Registration.from_body(registration_body(spec), DEFAULTS).error


@pytest.mark.parametrize(
    ("spec", "mentions"),
    [
        # The reproduced critical: a literal key anywhere in etcd.
        pytest.param({"prefix": "", "key": "/config/prod/db-url"}, "non-empty prefix", id="free"),
        pytest.param({"prefix": "", "key": "{service}-{pod}"}, "non-empty prefix", id="glued"),
        pytest.param({"prefix": "/etcd-registrar"}, "/etcd-registrar", id="reserved"),
        pytest.param(
            {"prefix": "/etcd-registrar/default/leases", "key": "{prefix}/{pod}"},
            "/etcd-registrar",
            id="lease-records",
        ),
        pytest.param({"format": "json", "prefix": ""}, "non-empty prefix", id="json-no-prefix"),
        pytest.param({"value": "{ip}\n{port}"}, "control character", id="newline-in-value"),
        pytest.param({"metadata": {"k": "a\x00b"}}, "control character", id="nul-in-metadata"),
        pytest.param({"metadata": {"k": "\ud800"}}, "UTF-8", id="surrogate-in-metadata"),
        pytest.param({"key": "{prefix}/\ud800/{pod}"}, "UTF-8", id="surrogate-in-key"),
        pytest.param({"service": "a..b"}, "service", id="empty-dns-label"),
        pytest.param({"port": "٨٠"}, "port", id="non-ascii-port"),
    ],
)
def test_registration_refused(spec: dict[str, object], mentions: str) -> None:
    error = registration_error(spec)
    assert error is not None and mentions in error


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"format": "go-zero"}, id="go-zero-under-service"),
        pytest.param({"format": "etcd-naming", "prefix": "", "key": "{service}/{address}"}),
        pytest.param({"prefix": "/etcd-registrar-apps"}, id="reserved-name-as-a-prefix-word"),
        pytest.param({"service": "goods.v1"}, id="dotted-service"),
    ],
)
def test_registration_accepted(spec: dict[str, object]) -> None:
    assert registration_error(spec) is None


@pytest.mark.parametrize(
    ("overrides", "mentions"),
    [
        pytest.param({"pod": "\ud800"}, "UTF-8", id="surrogate-fact"),
        pytest.param({"pod": "p\x01"}, "control character", id="control-fact-in-key"),
        pytest.param({"metadata": {"k": "\ud800"}}, "UTF-8", id="surrogate-metadata-in-json"),
    ],
)
def test_rendered_text_is_checked(overrides: dict[str, object], mentions: str) -> None:
    """Facts come from the API server: whatever slips through is refused after rendering,
    never handed to the etcd client (where it used to kill the writer)."""
    layout = build_layout(
        format="json", prefix=None, key=None, value=None, scheme="grpc", zone="z", ttl=5,
        metadata={},
    )  # fmt: skip
    with pytest.raises(TemplateError, match=mentions):
        layout.render({**SAMPLE, **overrides})


def test_rendered_key_is_checked_against_the_prefix() -> None:
    """A template that passes compilation still may not render outside its prefix."""
    layout = build_layout(
        format="address", prefix="/apps", key="{prefix}/{service}/{pod}", value=None,
        scheme="grpc", zone="z", ttl=5, metadata={},
    )  # fmt: skip
    object.__setattr__(layout, "prefix", "/elsewhere/..")
    with pytest.raises(TemplateError, match="not under"):
        layout.render(SAMPLE)
