"""CLI (docs/configuration.md): flags mirror Settings; `watch` finds a service's keys; bad
input is one line and exit code 2."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from etcd_registrar import __version__
from etcd_registrar.cli import (
    build_parser,
    load_settings,
    main,
    nothing_held,
    owners_in,
    service_prefix,
)
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
        (["--etcd-ca", "{dir}/ca.pem"], "etcd_ca", "{dir}/ca.pem"),
        (["--etcd-cert", "{dir}/c.pem", "--etcd-ca", "{dir}/ca.pem"], "etcd_cert", "{dir}/c.pem"),
        (["--etcd-key", "{dir}/k.pem", "--etcd-ca", "{dir}/ca.pem"], "etcd_key", "{dir}/k.pem"),
        (["--etcd-username", "u"], "etcd_username", "u"),
        (["--etcd-password-file", "{dir}/pw"], "etcd_password_file", "{dir}/pw"),
        (["--kubeconfig", "{dir}/kubeconfig"], "kubeconfig", "{dir}/kubeconfig"),
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
        (["--log-level", "debug"], "log_level", "debug"),
    ],
    ids=lambda v: v[0].lstrip("-") if isinstance(v, list) else None,
)
def test_run_flags(argv: list[str], field: str, expected: object, tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "k.pem", "pw", "kubeconfig"):  # files must exist
        (tmp_path / name).write_text("")
    argv = [arg.format(dir=tmp_path) for arg in argv]
    expected = expected.format(dir=tmp_path) if isinstance(expected, str) else expected
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
def test_invalid_flag_exits_naming_it(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        settings(*argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert flag in error


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--etcd-ca", "{dir}/none.pem"], "--etcd-ca {dir}/none.pem: no such file"),
        (
            ["--etcd-ca", "{dir}/ca.pem", "--etcd-cert", "{dir}/none.pem"],
            "--etcd-cert {dir}/none.pem: no such file",
        ),
        (
            ["--etcd-ca", "{dir}/ca.pem", "--etcd-key", "{dir}/none.pem"],
            "--etcd-key {dir}/none.pem: no such file",
        ),
        (
            ["--etcd-username", "u", "--etcd-password-file", "{dir}"],
            "--etcd-password-file {dir}: not a readable file",
        ),
        (["--kubeconfig", "{dir}/none"], "--kubeconfig {dir}/none: no such file"),
    ],
    ids=lambda v: v[-2].lstrip("-") if isinstance(v, list) else None,
)
def test_a_missing_file_is_one_line_and_exit_code_2(
    argv: list[str], line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ca.pem").write_text("")
    endpoints = ["--etcd-endpoints", "https://127.0.0.1:1"]
    with pytest.raises(SystemExit) as exited:
        main(["ls", *endpoints, *(arg.format(dir=tmp_path) for arg in argv)])
    assert exited.value.code == 2
    expected = f"etcd-registrar: invalid configuration: {line.format(dir=tmp_path)}\n"
    assert capsys.readouterr().err == expected


@pytest.mark.parametrize(
    "command", [[], ["run"], ["ls"], ["watch"], ["crds"], ["doctor"], ["plan"], ["completion"]]
)
def test_every_command_answers_version(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"etcd-registrar {__version__}\n"
    assert __version__ != "unknown"


def test_the_kubernetes_client_is_not_imported_before_run_sets_kubeconfig() -> None:
    """The client reads $KUBECONFIG once, on import, for kopf's login: `run` sets it from
    --kubeconfig first, which only works while importing the CLI does not import it."""
    check = "import sys, etcd_registrar.cli; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


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


BASH = shutil.which("bash")


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize(
    ("words", "replies"),
    [
        (
            ["etcd-registrar", ""],
            "run ls watch crds doctor plan completion claims --help --version",
        ),
        (["etcd-registrar", "d"], "doctor"),
        (["etcd-registrar", "run", "--log-l"], "--log-level"),
        (["etcd-registrar", "run", "--log-level", ""], "debug info warning error"),
        (["kubectl-etcd_registrar", "watch", "goods", "--format", "go"], "go-zero go-micro"),
        (["etcd-registrar", "completion", ""], "--help bash --version"),
        (["etcd-registrar", "ls", "--etcd-ca", "{dir}/pki/c"], "{dir}/pki/ca.pem"),
    ],
    ids=lambda v: " ".join(v[1:]) if isinstance(v, list) else None,
)
def test_bash_completion(
    words: list[str], replies: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The script `etcd-registrar completion bash` prints, run by bash as completion would."""
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.pem").write_text("")
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "completion.bash"
    script.write_text(capsys.readouterr().out)
    words = [w.format(dir=tmp_path) for w in words]
    complete = (
        f"source {shlex.quote(str(script))}; COMP_WORDS=({shlex.join(words)}); "
        'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _etcd_registrar; echo "${COMPREPLY[*]}"'
    )
    out = subprocess.run([str(BASH), "-c", complete], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == replies.format(dir=tmp_path)
