"""Operator configuration (docs/configuration.md): Settings from the environment, durations,
endpoints."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from etcd_registrar.config import Settings, parse_duration
from etcd_registrar.etcd import EtcdConfig, grpc_targets
from etcd_registrar.formats import FORMATS, Format
from etcd_registrar.source import Defaults


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({}, "etcd_endpoints", ["http://127.0.0.1:2379"]),
        (
            {"ETCD_ENDPOINTS": "http://10.0.0.1:1,http://10.0.0.2:2"},
            "etcd_endpoints",
            ["http://10.0.0.1:1", "http://10.0.0.2:2"],
        ),
        ({"ETCD_ENDPOINTS": " http://a:1 , "}, "etcd_endpoints", ["http://a:1"]),
        (
            {"ETCD_ENDPOINTS": "https://etcd-0.etcd:2379,https://etcd-1.etcd:2379"},
            "etcd_endpoints",
            ["https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"],
        ),
        ({"NAMESPACE": "shop,web"}, "namespace", ["shop", "web"]),
        ({}, "namespace", []),
        ({"DEFAULT_TTL": "20"}, "default_ttl", 20),
        ({"DEFAULT_FORMAT": "kratos"}, "default_format", "kratos"),
        ({"DEFAULT_PREFIX": "/apps"}, "default_prefix", "/apps"),
        ({"RESYNC": "1m"}, "resync", 60.0),
        ({"DRY_RUN": "true"}, "dry_run", True),
        ({"OWNER_ID": "cluster-a"}, "owner_id", "cluster-a"),
        ({"METRICS_PORT": "0"}, "metrics_port", 0),
        ({"LOG_FORMAT": "json"}, "log_format", "json"),
        ({"ETCD_CA": "/etc/ca.pem"}, "etcd_ca", Path("/etc/ca.pem")),
        ({"POD_SELECTOR": "app in (a,b)"}, "pod_selector", "app in (a,b)"),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, dict) else None,
)
def test_settings_from_env(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, expected: object
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"ETCD_REGISTRAR_{name}", value)
    assert getattr(Settings(), field) == expected


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"DEFAULT_TTL": "1"}, "default_ttl"),
        ({"DEFAULT_TTL": "3601"}, "default_ttl"),
        ({"DEFAULT_FORMAT": "consul"}, "default_format"),
        ({"DEFAULT_PREFIX": "/a/../b"}, "default_prefix"),
        ({"DEFAULT_PREFIX": "apps"}, "default_prefix"),
        ({"OWNER_ID": "a/b"}, "owner_id"),
        ({"RESYNC": "abc"}, "resync"),
        ({"RESYNC": "0"}, "resync"),
        ({"ETCD_ENDPOINTS": ""}, "etcd_endpoints"),
        ({"ETCD_ENDPOINTS": "http://a:1,https://b:2"}, "etcd_endpoints"),
        ({"ETCD_ENDPOINTS": "unix:///run/etcd.sock"}, "etcd_endpoints"),
        ({"LOG_FORMAT": "xml"}, "log_format"),
    ],
    ids=lambda v: "-".join(f"{k}={w}" for k, w in v.items()) if isinstance(v, dict) else None,
)
def test_settings_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(f"ETCD_REGISTRAR_{name}", value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_unknown_env_key_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD_REGISTRAR_NOT_A_FLAG", "1")
    assert Settings().default_ttl == 10


def test_unknown_init_kwarg_is_refused() -> None:
    kwargs: dict[str, Any] = {"not_a_flag": 1}
    with pytest.raises(ValidationError, match="not_a_flag"):
        Settings(**kwargs)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("500ms", 0.5), ("1m", 60.0), ("2", 2.0), ("1.5h", 5400.0), (" 3s ", 3.0)],
    ids=str,
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert Settings(resync=text).resync == seconds


@pytest.mark.parametrize("text", ["abc", "", "1d", "-1s", "s"], ids=repr)
def test_parse_duration_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "endpoints",
    [["http://a:1", "https://b:2"], ["https://10.0.0.1:2379", "10.0.0.2:2379"]],
    ids=["explicit", "bare-is-http"],
)
def test_mixed_schemes_refused(endpoints: list[str]) -> None:
    with pytest.raises(ValidationError, match="all be http:// or all https://"):
        Settings(etcd_endpoints=endpoints)


@pytest.mark.parametrize(
    ("endpoints", "targets", "secure"),
    [
        (["http://etcd:2379"], ["etcd:2379"], False),
        (["https://etcd.example.org"], ["etcd.example.org:2379"], True),
        (["10.0.0.1:2380"], ["10.0.0.1:2380"], False),
        (["http://[fd00::1]:2379"], ["[fd00::1]:2379"], False),
        (
            ["http://10.0.0.1:2379", "http://10.0.0.2:2380"],
            ["ipv4:10.0.0.1:2379,10.0.0.2:2380"],
            False,
        ),
        (["http://[fd00::1]:1", "http://[fd00::2]:2"], ["ipv6:[fd00::1]:1,[fd00::2]:2"], False),
        # over TLS a channel per member, so that each certificate is checked against its own
        # name or IP; the same for names and for addresses of both families
        (["https://10.0.0.1", "https://10.0.0.2"], ["10.0.0.1:2379", "10.0.0.2:2379"], True),
        (
            ["https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"],
            ["etcd-0.etcd:2379", "etcd-1.etcd:2379"],
            True,
        ),
        (["http://etcd-0:2379", "http://etcd-1:2379"], ["etcd-0:2379", "etcd-1:2379"], False),
        (["http://10.0.0.1:2379", "http://etcd-1:2379"], ["10.0.0.1:2379", "etcd-1:2379"], False),
        (["http://10.0.0.1:1", "http://[fd00::1]:1"], ["10.0.0.1:1", "[fd00::1]:1"], False),
    ],
    ids=[
        "hostname",
        "https-default-port",
        "bare",
        "ipv6",
        "ipv4s",
        "ipv6s",
        "ipv4s-https",
        "hostnames-https",
        "hostnames",
        "ip-and-hostname",
        "mixed-family",
    ],
)
def test_grpc_targets(endpoints: list[str], targets: list[str], secure: bool) -> None:
    assert grpc_targets(endpoints) == (targets, secure)


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ([], "no etcd endpoints"),
        (["http://a:1", "https://b:1"], "all https://"),
        (["grpc://10.0.0.1:2379"], "all https://"),
    ],
    ids=["none", "mixed-schemes", "grpc-scheme"],
)
def test_grpc_targets_refused(endpoints: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        grpc_targets(endpoints)


@pytest.mark.parametrize(
    ("endpoints", "tls"),
    [
        (("http://10.0.0.1:2379",), {"cert": Path("c.pem"), "key": Path("k.pem")}),
        (("10.0.0.1:2379", "10.0.0.2:2379"), {"cert": Path("c.pem")}),
        (("http://10.0.0.1:2379",), {"key": Path("k.pem")}),
    ],
    ids=["http", "no-scheme", "key-only"],
)
def test_client_certificate_over_plaintext_is_refused(
    endpoints: tuple[str, ...], tls: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="would be plaintext: use https:// endpoints"):
        EtcdConfig(endpoints=endpoints, **tls)


@pytest.mark.parametrize(
    ("endpoints", "ca"),
    [(("https://10.0.0.1:2379",), None), (("http://10.0.0.1:2379",), Path("ca.pem"))],
    ids=["https", "http-with-ca"],  # a CA turns TLS on (Etcd.connect)
)
def test_client_certificate_with_tls_is_accepted(
    endpoints: tuple[str, ...], ca: Path | None
) -> None:
    EtcdConfig(endpoints=endpoints, ca=ca, cert=Path("c.pem"), key=Path("k.pem"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_accepted_default_prefix_builds_defaults(fmt: Format) -> None:
    """Settings the operator accepts must not crash it at startup (app.App.start)."""
    try:
        settings = Settings(default_format=fmt, default_prefix="/apps")
    except ValidationError:
        return  # refused up front with a message: fine
    Defaults(settings.default_ttl, settings.default_format, settings.default_prefix)


def test_etcd_config_keeps_the_password_file_to_read_at_each_login(tmp_path: Path) -> None:
    """The file, not its content: a rotated password is read at the next login (the secured
    etcd integration test logs in with it)."""
    secret = tmp_path / "password"
    settings = Settings(etcd_username="registrar", etcd_password_file=secret, etcd_timeout=2.5)
    config = settings.etcd()
    assert (config.username, config.password_file, config.timeout) == ("registrar", secret, 2.5)
    assert tuple(config.endpoints) == ("http://127.0.0.1:2379",)
