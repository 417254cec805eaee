"""Key/value layouts (docs/formats.md, docs/crd.md): presets, custom templates and what is
refused."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest

from etcd_registrar.formats import (
    FORMATS,
    PRESETS,
    Format,
    Layout,
    TemplateError,
    build_layout,
    compile_template,
)
from tests.unit.builders import SAMPLE


def layout(
    fmt: Format = "address",
    *,
    prefix: str | None = None,
    key: str | None = None,
    value: str | None = None,
    scheme: str = "grpc",
    zone: str = "skydns.local",
    ttl: int = 10,
    metadata: Mapping[str, str] | None = None,
) -> Layout:
    return build_layout(
        format=fmt,
        prefix=prefix,
        key=key,
        value=value,
        scheme=scheme,
        zone=zone,
        ttl=ttl,
        metadata=metadata or {},
    )


def render(lay: Layout, **overrides: Any) -> tuple[str, str]:
    return lay.render({**SAMPLE, **overrides})


def decoded(value: str, expected: object) -> object:
    """JSON values are compared as objects, plain values as text."""
    return json.loads(value) if isinstance(expected, dict) else value


ADDR = "10.0.0.5:8080"
PRESET_CASES: dict[str, tuple[str, object]] = {
    "address": ("/services/goods/goods-abc", ADDR),
    "json": (
        "/services/goods/goods-abc",
        {
            "service": "goods",
            "namespace": "shop",
            "pod": "goods-abc",
            "node": "node-1",
            "ip": "10.0.0.5",
            "port": 8080,
            "address": ADDR,
            "metadata": {"version": "v1"},
        },
    ),
    "etcd-naming": (
        f"/services/goods/{ADDR}",
        {"Op": 0, "Addr": ADDR, "Metadata": None},
    ),
    "kratos": (
        "/microservices/goods/goods-abc",
        {
            "id": "goods-abc",
            "name": "goods",
            "version": "v1",
            "metadata": {"version": "v1"},
            "endpoints": [f"grpc://{ADDR}?isSecure=false"],
        },
    ),
    "go-zero": ("goods/goods-abc", ADDR),
    "go-micro": (
        "/micro/registry/goods/goods-goods-abc",
        {
            "name": "goods",
            "version": "v1",
            "metadata": {"version": "v1"},
            "endpoints": [],
            "nodes": [
                {
                    "id": "goods-goods-abc",
                    "address": ADDR,
                    "metadata": {"version": "v1", "protocol": "grpc"},
                }
            ],
        },
    ),
    "coredns": (
        "/skydns/local/skydns/goods/goods-abc",
        {"host": "10.0.0.5", "port": 8080, "ttl": 10},
    ),
}


def test_every_preset_has_a_case() -> None:
    assert set(PRESET_CASES) == set(FORMATS) == set(PRESETS)


@pytest.mark.parametrize(
    ("fmt", "key", "value"), [(f, *c) for f, c in PRESET_CASES.items()], ids=str
)
def test_preset_renders_exact_layout(fmt: Format, key: str, value: object) -> None:
    got_key, got_value = render(layout(fmt))
    assert got_key == key
    assert decoded(got_value, value) == value


@pytest.mark.parametrize(
    ("metadata", "value"),
    [
        pytest.param(
            {"version": "v1"},
            '{"Op":0,"Addr":"10.0.0.5:8080","Metadata":null}',
            id="metadata-never-carried",
        ),
        pytest.param({}, '{"Op":0,"Addr":"10.0.0.5:8080","Metadata":null}', id="no-metadata"),
    ],
)
def test_etcd_naming_exact_text(metadata: dict[str, str], value: str) -> None:
    assert render(layout("etcd-naming"), metadata=metadata)[1] == value


@pytest.mark.parametrize(
    ("scheme", "endpoint"),
    [("grpc", f"grpc://{ADDR}?isSecure=false"), ("http", f"http://{ADDR}?isSecure=false")],
    ids=["grpc", "http"],
)
def test_kratos_name_matches_key_and_scheme(scheme: str, endpoint: str) -> None:
    key, value = render(layout("kratos", scheme=scheme), service="orders")
    instance = json.loads(value)
    assert key.split("/")[2] == instance["name"] == "orders"
    assert instance["endpoints"] == [endpoint]


def test_go_micro_protocol_follows_scheme() -> None:
    _, value = render(layout("go-micro", scheme="http"))
    assert json.loads(value)["nodes"][0]["metadata"]["protocol"] == "http"


@pytest.mark.parametrize(
    ("zone", "ttl", "key"),
    [
        ("skydns.local", 30, "/skydns/local/skydns/goods/goods-abc"),
        ("svc.example.org", 5, "/skydns/org/example/svc/goods/goods-abc"),
    ],
    ids=["default-zone", "custom-zone"],
)
def test_coredns_zone_and_ttl(zone: str, ttl: int, key: str) -> None:
    got_key, value = render(layout("coredns", zone=zone, ttl=ttl))
    assert got_key == key
    assert json.loads(value)["ttl"] == ttl


def test_registration_metadata_is_merged_under_pod_metadata() -> None:
    lay = layout("json", metadata={"version": "v0", "team": "shop"})
    _, value = render(lay)
    assert json.loads(value)["metadata"] == {"version": "v1", "team": "shop"}


@pytest.mark.parametrize(
    ("fmt", "key", "value"),
    [
        ("address", "/services/goods/goods-abc", "[fd00::1]:8080"),
        ("etcd-naming", "/services/goods/[fd00::1]:8080", {"Op": 0, "Addr": "[fd00::1]:8080"}),
        ("coredns", "/skydns/local/skydns/goods/goods-abc", {"host": "fd00::1", "port": 8080}),
    ],
    ids=["address", "etcd-naming", "coredns"],
)
def test_ipv6(fmt: Format, key: str, value: object) -> None:
    got_key, got_value = render(layout(fmt), ip="fd00::1")
    assert got_key == key
    got = decoded(got_value, value)
    if isinstance(value, dict):
        assert isinstance(got, dict)
        got = {k: got[k] for k in value}
    assert got == value


@pytest.mark.parametrize(
    ("kwargs", "key", "value"),
    [
        pytest.param(
            {"key": "{prefix}/{namespace}/{service}/{uid}", "value": "{scheme}://{address}"},
            "/services/shop/goods/uid-goods-abc",
            "grpc://10.0.0.5:8080",
            id="all-placeholders",
        ),
        pytest.param(
            {"value": '{{"addr":"{ip}","port":{port},"node":"{node}"}}'},
            "/services/goods/goods-abc",
            '{"addr":"10.0.0.5","port":8080,"node":"node-1"}',
            id="escaped-braces",
        ),
        pytest.param(
            {"prefix": "/apps", "key": "{prefix}/{service}/{pod}"},
            "/apps/goods/goods-abc",
            ADDR,
            id="custom-prefix",
        ),
        pytest.param(  # the etcd naming resolver reads "etcd:///goods" from goods/...
            {"fmt": "etcd-naming", "prefix": "", "key": "{service}/{address}"},
            f"goods/{ADDR}",
            f'{{"Op":0,"Addr":"{ADDR}","Metadata":null}}',
            id="etcd-naming-without-leading-slash",
        ),
        pytest.param(
            {"fmt": "kratos", "value": "{address}"},
            "/microservices/goods/goods-abc",
            ADDR,
            id="value-overrides-preset",
        ),
    ],
)
def test_custom_templates(kwargs: dict[str, Any], key: str, value: str) -> None:
    assert render(layout(**kwargs)) == (key, value)


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("{foo}", "{foo}"),
        ("{pod.__class__}", "{pod.__class__}"),
        ("{pod[0]}", "{pod[0]}"),
        ("{pod!r}", "{pod!r}"),
        ("{pod:>10}", "{pod:>10}"),
        ("{}", "{}"),
        ("{0}", "{0}"),
        ("{pod", "'{pod'"),
        ("pod}", "'pod}'"),
        ("{metadata}", "{metadata}"),
        ("{version}", "{version}"),
        ("{ttl}", "{ttl}"),
        ("{dnspath}", "{dnspath}"),
    ],
    ids=str,
)
def test_template_refused(source: str, named: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(named)):
        compile_template(source)
    with pytest.raises(TemplateError, match=re.escape(named.strip("'"))):
        layout(key="{prefix}/" + source)
    with pytest.raises(TemplateError, match=re.escape(named.strip("'"))):
        layout(value=source)


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("{{pod}}", "{pod}"),
        ("{{{pod}}}", "{goods-abc}"),
        ("}}{{", "}{"),
        ("plain", "plain"),
        ("", ""),
    ],
    ids=str,
)
def test_brace_escapes(source: str, rendered: str) -> None:
    assert compile_template(source).render(SAMPLE) == rendered


@pytest.mark.parametrize(
    ("fmt", "prefix", "key"),
    [
        pytest.param("address", None, "{service}/{pod}", id="preset-prefix"),
        pytest.param("address", "/apps", "/apps/{service}/{pod}", id="literal-prefix"),
        pytest.param("json", "/apps", "x{prefix}/{pod}", id="prefix-not-first"),
        # "/services" + "goods" = "/servicesgoods/...": not under the prefix as a path.
        pytest.param("address", None, "{prefix}{service}/{pod}", id="prefix-glued"),
    ],
)
def test_key_must_start_under_prefix(fmt: Format, prefix: str | None, key: str) -> None:
    with pytest.raises(TemplateError, match=re.escape("{prefix}")):
        layout(fmt, prefix=prefix, key=key)


@pytest.mark.parametrize("bad", ["a/b", "", ".", ".."], ids=["slash", "empty", "dot", "dotdot"])
def test_key_segments_refused(bad: str) -> None:
    template = compile_template("{prefix}/{pod}")
    with pytest.raises(TemplateError, match=re.escape("{pod}")):
        template.render({"prefix": "/a", "pod": bad}, as_key=True)
    assert template.render({"prefix": "/a", "pod": bad}) == f"/a/{bad}"  # values may


def test_prefix_may_span_segments_in_keys() -> None:
    template = compile_template("{prefix}/{pod}")
    assert template.render({"prefix": "/a/b", "pod": "p"}, as_key=True) == "/a/b/p"


def test_layout_refuses_empty_segment_in_key() -> None:
    lay = layout(key="{prefix}/{node}/{pod}")
    with pytest.raises(TemplateError, match=re.escape("{node}")):
        render(lay, node="")
