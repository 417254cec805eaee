"""The data model (docs/annotations.md, docs/crd.md): pod annotations, the spec, label selectors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from etcd_registrar import ANNOTATION_METADATA, ANNOTATION_PORT, ANNOTATION_SERVICE
from etcd_registrar.model import (
    PORT_RULE,
    LabelSelector,
    PodOptIn,
    ServiceRegistrationSpec,
    describe,
    parse_pod_annotations,
)
from tests.unit.builders import opt_in


@pytest.mark.parametrize(
    ("given", "named"),
    [
        pytest.param(opt_in(port="0"), ANNOTATION_PORT, id="port-0"),
        pytest.param(opt_in(port="70000"), ANNOTATION_PORT, id="port-70000"),
        pytest.param(opt_in(port="-1"), ANNOTATION_PORT, id="port-negative"),
        pytest.param(opt_in(port="HTTP"), ANNOTATION_PORT, id="port-name-upper"),
        pytest.param(opt_in(port="a" * 16), ANNOTATION_PORT, id="port-name-too-long"),
        pytest.param(opt_in("../x"), ANNOTATION_SERVICE, id="service-dotdot"),
        pytest.param(opt_in("a/b"), ANNOTATION_SERVICE, id="service-slash"),
        pytest.param(opt_in("a" * 300), ANNOTATION_SERVICE, id="service-300"),
        pytest.param(opt_in("a" * 64), ANNOTATION_SERVICE, id="service-64"),
        pytest.param(opt_in("Upper"), ANNOTATION_SERVICE, id="service-upper"),
        pytest.param(opt_in("goods-"), ANNOTATION_SERVICE, id="service-trailing-dash"),
        pytest.param(opt_in(""), ANNOTATION_SERVICE, id="service-empty"),
        pytest.param(opt_in(metadata="{"), ANNOTATION_METADATA, id="metadata-not-json"),
        pytest.param(opt_in(metadata="[1]"), ANNOTATION_METADATA, id="metadata-list"),
        pytest.param(opt_in(metadata="null"), ANNOTATION_METADATA, id="metadata-null"),
        pytest.param(opt_in(metadata={"a": 1}), ANNOTATION_METADATA, id="metadata-int"),
        pytest.param(opt_in(metadata={"a": {"b": "c"}}), ANNOTATION_METADATA, id="metadata-nested"),
        pytest.param(opt_in(metadata={"a": "x" * 4100}), ANNOTATION_METADATA, id="metadata-4k"),
    ],
)
def test_bad_annotations_name_the_annotation(given: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        parse_pod_annotations(given)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(opt_in(), PodOptIn(service="goods"), id="service-only"),
        pytest.param(
            opt_in("goods.v2", port="8080"),
            PodOptIn(service="goods.v2", port=8080),
            id="port-number",
        ),
        pytest.param(opt_in(port=" 443 "), PodOptIn(service="goods", port=443), id="spaces"),
        pytest.param(opt_in(port="abc"), PodOptIn(service="goods", port="abc"), id="name"),
        pytest.param(
            opt_in(port="grpc-web", metadata={"version": "v1"}),
            PodOptIn(service="goods", port="grpc-web", metadata={"version": "v1"}),
            id="name-and-metadata",
        ),
        pytest.param(opt_in("a" * 63), PodOptIn(service="a" * 63), id="service-63"),
    ],
)
def test_valid_annotations(given: dict[str, str], expected: PodOptIn) -> None:
    assert parse_pod_annotations(given) == expected


@pytest.mark.parametrize("given", [{}, {"app": "goods"}], ids=["none", "unrelated"])
def test_no_registrar_annotation_is_no_opt_in(given: dict[str, str]) -> None:
    assert parse_pod_annotations(given) is None


def test_port_and_metadata_count_without_a_service_annotation() -> None:
    """A pod a registration selects still chooses its port and metadata by annotation."""
    given = opt_in(None, port="8080", metadata={"a": "b"})
    assert parse_pod_annotations(given) == PodOptIn(port=8080, metadata={"a": "b"})


@pytest.mark.parametrize(
    ("port", "shown"),
    [
        pytest.param("70000", "70000", id="number-too-big"),
        pytest.param("0", "0", id="number-zero"),
        pytest.param("http_alt", "'http_alt'", id="name-underscore"),
        pytest.param("HTTP", "'HTTP'", id="name-upper"),
        pytest.param("-http", "'-http'", id="name-leading-dash"),
        pytest.param("metrics-exporter", "'metrics-exporter'", id="name-16-chars"),
    ],
)
def test_bad_port_is_one_message_saying_what_is_valid(port: str, shown: str) -> None:
    """Not one error per reading of the number-or-name union ("should be <= 65535" and
    "should be a valid string"), but what a port may be, once."""
    expected = f"{ANNOTATION_PORT}: {PORT_RULE} (got {shown})"
    with pytest.raises(ValueError) as refused:
        parse_pod_annotations(opt_in(None, port=port))
    assert str(refused.value) == expected
    raw: object = int(port) if port.isdigit() else port
    with pytest.raises(ValidationError) as invalid:
        ServiceRegistrationSpec.model_validate({"port": raw})
    assert describe(invalid.value) == f"port: {PORT_RULE} (got {shown})"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param({"ttl": 1}, "ttl", id="ttl-1"),
        pytest.param({"ttl": 3601}, "ttl", id="ttl-3601"),
        pytest.param({"prefix": "/a/../b"}, "prefix", id="prefix-dotdot"),
        pytest.param({"prefix": "/a/./b"}, "prefix", id="prefix-dot"),
        pytest.param({"prefix": "services"}, "prefix", id="prefix-relative"),
        pytest.param({"prefix": "/services/"}, "prefix", id="prefix-trailing-slash"),
        pytest.param({"format": "consul"}, "format", id="format-unknown"),
        pytest.param({"port": 0}, "port", id="port-0"),
        pytest.param({"port": "HTTP"}, "port", id="port-name-upper"),
        pytest.param({"service": "A"}, "service", id="service-upper"),
        pytest.param({"scheme": "tcp"}, "scheme", id="scheme"),
        pytest.param({"zone": "Bad_Zone"}, "zone", id="zone"),
        pytest.param({"metadata": {"a": "x" * 4100}}, "metadata", id="metadata-4k"),
        pytest.param({"servce": "goods"}, "servce", id="unknown-field"),
        pytest.param({"selector": {"matchLabel": {}}}, "matchLabel", id="unknown-nested"),
    ],
)
def test_spec_refused(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(field)):
        ServiceRegistrationSpec.model_validate(spec)


@pytest.mark.parametrize(
    ("spec", "attr", "value"),
    [
        pytest.param({"ttl": 2}, "ttl", 2, id="ttl-2"),
        pytest.param({"ttl": 3600}, "ttl", 3600, id="ttl-3600"),
        pytest.param({"prefix": ""}, "prefix", "", id="prefix-empty"),
        pytest.param({"prefix": "/a/b.c/d_e"}, "prefix", "/a/b.c/d_e", id="prefix-nested"),
        pytest.param({"publishNotReady": True}, "publish_not_ready", True, id="camel-alias"),
        pytest.param({"port": "http"}, "port", "http", id="port-name"),
        pytest.param({"port": 8080}, "port", 8080, id="port-number"),
        pytest.param({}, "scheme", "grpc", id="default-scheme"),
        pytest.param({}, "zone", "skydns.local", id="default-zone"),
    ],
)
def test_spec_accepted(spec: dict[str, Any], attr: str, value: object) -> None:
    assert getattr(ServiceRegistrationSpec.model_validate(spec), attr) == value


LABELS = {"app": "goods", "tier": "backend"}


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, **({"values": list(values)} if values else {})}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        pytest.param({}, True, id="empty"),
        pytest.param({"matchLabels": {}}, True, id="empty-match-labels"),
        pytest.param({"matchLabels": {"app": "goods"}}, True, id="labels-subset"),
        pytest.param({"matchLabels": {"app": "goods", "tier": "x"}}, False, id="labels-differ"),
        pytest.param({"matchLabels": {"zone": "a"}}, False, id="labels-missing"),
        pytest.param({"matchExpressions": [expr("app", "In", "a", "goods")]}, True, id="in"),
        pytest.param({"matchExpressions": [expr("app", "In", "a")]}, False, id="in-miss"),
        pytest.param({"matchExpressions": [expr("zone", "In", "a")]}, False, id="in-absent"),
        pytest.param({"matchExpressions": [expr("app", "NotIn", "goods")]}, False, id="notin"),
        pytest.param({"matchExpressions": [expr("app", "NotIn", "x")]}, True, id="notin-miss"),
        pytest.param({"matchExpressions": [expr("zone", "NotIn", "a")]}, True, id="notin-absent"),
        pytest.param({"matchExpressions": [expr("tier", "Exists")]}, True, id="exists"),
        pytest.param({"matchExpressions": [expr("zone", "Exists")]}, False, id="exists-absent"),
        pytest.param({"matchExpressions": [expr("zone", "DoesNotExist")]}, True, id="dne"),
        pytest.param({"matchExpressions": [expr("app", "DoesNotExist")]}, False, id="dne-present"),
        pytest.param(
            {"matchLabels": {"app": "goods"}, "matchExpressions": [expr("tier", "In", "front")]},
            False,
            id="all-terms-must-hold",
        ),
    ],
)
def test_label_selector(selector: dict[str, Any], matches: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(LABELS) is matches


def test_label_selector_refuses_unknown_operator() -> None:
    with pytest.raises(ValidationError, match="operator"):
        LabelSelector.model_validate({"matchExpressions": [expr("app", "Equals", "goods")]})
