"""CLI (DESIGN 2.5, 2.6): flags mirror Settings; `watch` finds a service's keys."""

from __future__ import annotations

import pytest

from etcd_registrar.cli import build_parser, load_settings, nothing_held, owners_in, service_prefix
from etcd_registrar.config import Settings
from etcd_registrar.formats import FORMATS, Format, build_layout
from tests.unit.builders import SAMPLE


@pytest.mark.parametrize(
    ("fmt", "prefix", "expected"),
    [
        ("address", None, "/services/goods/"),
        ("json", "/apps", "/apps/goods/"),
        ("etcd-naming", None, "/services/goods/"),
        ("go-zero", None, "goods/"),
        ("coredns", None, "/skydns/local/skydns/goods/"),
        ("kratos", None, "/microservices/goods/"),
        ("go-micro", None, "/micro/registry/goods/"),
    ],
    ids=str,
)
def test_service_prefix(fmt: Format, prefix: str | None, expected: str) -> None:
    assert service_prefix("goods", fmt, prefix) == expected


@pytest.mark.parametrize("fmt", FORMATS)
def test_service_prefix_covers_rendered_keys(fmt: Format) -> None:
    layout = build_layout(
        format=fmt,
        prefix=None,
        key=None,
        value=None,
        scheme="grpc",
        zone="skydns.local",
        ttl=10,
        metadata={},
    )
    key, _ = layout.render(SAMPLE)
    assert key.startswith(service_prefix("goods", fmt, None))
    assert not key.startswith(service_prefix("good", fmt, None))  # no sibling services


def settings(*argv: str) -> Settings:
    return load_settings(build_parser().parse_args(["run", *argv]))


@pytest.mark.parametrize(
    ("argv", "field", "expected"),
    [
        (["--etcd-endpoints", "http://10.0.0.1:1,http://10.0.0.2:2"], "etcd_endpoints", 2),
        (
            ["--etcd-endpoints", "http://10.0.0.1:1", "--etcd-endpoints", "http://10.0.0.2:1"],
            "etcd_endpoints",
            2,
        ),
        (["--namespace", "a", "--namespace", "b,c"], "namespace", ["a", "b", "c"]),
        (["--etcd-ca", "/ca.pem"], "etcd_ca", "/ca.pem"),
        (["--etcd-cert", "/c.pem", "--etcd-ca", "/ca.pem"], "etcd_cert", "/c.pem"),
        (["--etcd-key", "/k.pem", "--etcd-ca", "/ca.pem"], "etcd_key", "/k.pem"),
        (["--etcd-username", "u"], "etcd_username", "u"),
        (["--etcd-password-file", "/pw"], "etcd_password_file", "/pw"),
        (["--pod-selector", "app=goods"], "pod_selector", "app=goods"),
        (["--default-ttl", "30"], "default_ttl", 30),
        (["--default-format", "coredns"], "default_format", "coredns"),
        (["--default-prefix", "/apps"], "default_prefix", "/apps"),
        (["--owner-id", "east"], "owner_id", "east"),
        (["--resync", "500ms"], "resync", 0.5),
        (["--dry-run"], "dry_run", True),
        (["--metrics-port", "0"], "metrics_port", 0),
        (["--health-port", "9000"], "health_port", 9000),
        (["--log-format", "json"], "log_format", "json"),
    ],
    ids=lambda v: v[0].lstrip("-") if isinstance(v, list) else None,
)
def test_run_flags(argv: list[str], field: str, expected: object) -> None:
    value = getattr(settings(*argv), field)
    if field == "etcd_endpoints":
        value = len(value)
    assert (str(value) if isinstance(expected, str) and "/" in expected else value) == expected


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--default-ttl", "0"], "--default-ttl"),
        (["--default-format", "consul"], "--default-format"),
        (["--resync", "soon"], "--resync"),
        (["--etcd-endpoints", "http://a:1,https://b:1"], "--etcd-endpoints"),
        (["--etcd-cert", "/c.pem"], "--etcd-cert"),  # plaintext endpoints: it would go unused
    ],
    ids=lambda v: v[0].lstrip("-") if isinstance(v, list) else None,
)
def test_invalid_flag_exits_naming_it(argv: list[str], flag: str) -> None:
    with pytest.raises(SystemExit) as exited:
        settings(*argv)
    assert isinstance(exited.value.code, str)
    assert flag in exited.value.code


def test_flag_overrides_env_and_env_fills_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD_REGISTRAR_DEFAULT_TTL", "20")
    monkeypatch.setenv("ETCD_REGISTRAR_DRY_RUN", "true")
    loaded = settings("--default-ttl", "30")
    assert (loaded.default_ttl, loaded.dry_run) == (30, True)


@pytest.mark.parametrize(
    ("keys", "owners"),
    [
        ([], {}),
        (
            [
                "/etcd-registrar/a/leader",
                "/etcd-registrar/a/leases/1f",
                "/etcd-registrar/a/leases/20",
                "/etcd-registrar/b/claims//services/goods/",
            ],
            {"a": 2, "b": 0},
        ),
        (["/etcd-registrar/", "/etcd-registrar/lonely"], {}),  # no bookkeeping under an id
    ],
)
def test_the_owner_ids_present_are_found_from_the_keys(
    keys: list[str], owners: dict[str, int]
) -> None:
    assert owners_in(keys) == owners


def test_an_owner_id_holding_nothing_is_told_the_ones_present() -> None:
    told = nothing_held("default", {"shop-registrar-1a2b3c4d": 3, "x": 1})
    assert "'default' holds nothing" in told
    assert "shop-registrar-1a2b3c4d (3 leases), x (1 lease)" in told and "--owner-id" in told
    assert "--etcd-endpoints" in nothing_held("default", {})
