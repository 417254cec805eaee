"""`etcd-registrar doctor` when what it checks is down: a real closed port for the API
server, a real etcd or a closed port for etcd, the real command. One root cause is one FAIL
with its fix; the checks that need it say they were skipped, and why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from etcd_registrar.doctor import needed
from tests.harness import EtcdServer, free_port
from tests.integration.conftest import Kubeconfig

pytestmark = pytest.mark.integration

RIGHTS = [right.label(ns) for right, ns in needed([])]


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "etcd_registrar", "doctor", "--etcd-timeout", "1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_api_server_and_etcd_down_are_two_fails_and_the_rest_skipped(
    unreachable_kubeconfig: Kubeconfig,
) -> None:
    etcd = f"http://127.0.0.1:{free_port()}"
    result = doctor("--kubeconfig", str(unreachable_kubeconfig.path), "--etcd-endpoints", etcd)
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    assert result.stderr == ""  # no urllib3 retry warnings, no traceback
    assert [line[:6] for line in lines if line.startswith("FAIL")] == ["FAIL  "] * 2
    assert lines[0] == f"FAIL  API server {unreachable_kubeconfig.server}: Connection refused"
    assert lines[1] == "      fix: check the API server address and credentials in the kubeconfig"
    skipped = [f"skip  {name}: needs the API server, which failed above" for name in RIGHTS]
    assert lines[2 : 3 + len(RIGHTS)] == [
        "skip  CRD installed: needs the API server, which failed above",
        *skipped,
    ]
    assert lines[3 + len(RIGHTS)].startswith(f"FAIL  etcd reachable at {etcd}: ")
    assert lines[5:][len(RIGHTS) :] == [
        "skip  etcd lease and write: needs etcd, which failed above",
        "skip  etcd read/write under /services/: needs etcd, which failed above",
        f"2 checks failed, {len(RIGHTS) + 3} skipped",
    ]


def test_no_kubeconfig_is_one_fail_and_the_api_checks_skipped(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    result = doctor(
        "--kubeconfig", str(tmp_path / "none"), "--etcd-endpoints", etcd_server.endpoint
    )  # fmt: skip
    assert result.returncode == 2  # a flag naming no file is a usage error
    assert result.stderr.endswith(": no such file\n")
    empty = tmp_path / "empty"
    empty.write_text("")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "etcd_registrar",
            "doctor",
            "--etcd-endpoints",
            etcd_server.endpoint,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"KUBECONFIG": str(empty), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines[0].startswith("FAIL  kubeconfig: ")
    assert [line for line in lines if line.startswith("FAIL")] == [lines[0]]
    assert "skip  API server: needs the kubeconfig, which failed above" in lines
    assert f"ok    etcd reachable at {etcd_server.endpoint}: etcd " in result.stdout
    assert "ok    etcd lease and write: " in result.stdout
    assert lines[-1] == f"1 check failed, {len(RIGHTS) + 2} skipped"
