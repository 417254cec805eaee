"""`etcd-registrar doctor` when what it checks is down: a real closed port for the API
server, a real etcd or a closed port for etcd, the real command. One root cause is one FAIL
with its fix; the checks that need it say they were skipped, and why."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from etcd_registrar.doctor import SCOPE_FIX, needed
from etcd_registrar.etcd import Etcd, EtcdConfig
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
    api_checks = ["CRD installed", *RIGHTS, "CRD is this version's"]
    assert lines[2 : 2 + len(api_checks)] == [
        f"skip  {name}: needs the API server, which failed above" for name in api_checks
    ]
    assert lines[2 + len(api_checks)].startswith(f"FAIL  etcd reachable at {etcd}: ")
    etcd_checks = ["etcd lease and write", "etcd read/write under /services/", "leader"]
    assert lines[4 + len(api_checks) :] == [
        *(f"skip  {name}: needs etcd, which failed above" for name in etcd_checks),
        "skip  owner ids in etcd: needs etcd, which failed above",
        f"2 checks failed, {len(api_checks) + 4} skipped",
    ]


def test_no_kubeconfig_is_one_fail_and_the_api_checks_skipped(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    result = doctor(
        "--kubeconfig", str(tmp_path / "none"), "--etcd-endpoints", etcd_server.endpoint
    )  # fmt: skip
    assert result.returncode == 2  # a flag naming no file is a usage error
    assert result.stderr.endswith(": no such file\n")
    result = doctor_without_kubeconfig(tmp_path, "--etcd-endpoints", etcd_server.endpoint)
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines[0].startswith("FAIL  kubeconfig: ")
    assert [line for line in lines if line.startswith("FAIL")] == [lines[0]]
    assert "skip  API server: needs the kubeconfig, which failed above" in lines
    assert f"ok    etcd reachable at {etcd_server.endpoint}: etcd " in result.stdout
    assert "ok    etcd lease and write: " in result.stdout
    # no operator of this owner id runs: worth a look, not a failure
    assert (
        "warn  leader: none: no operator of owner id default runs, or none is elected yet" in lines
    )
    assert "ok    owner ids in etcd: default (nothing recorded yet); other owner ids: none" in lines
    assert lines[-1] == f"1 check failed, {len(RIGHTS) + 3} skipped"


def doctor_without_kubeconfig(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    empty = home / "empty"
    empty.write_text("")
    return subprocess.run(
        [sys.executable, "-m", "etcd_registrar", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"KUBECONFIG": str(empty), "HOME": str(home), "PATH": "/usr/bin:/bin"},
    )


async def test_the_leader_its_scope_and_the_other_owner_ids(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    """A leader of this owner id that watches another scope is a second installation sharing
    it by mistake: one FAIL naming both scopes and the fix."""
    etcd = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
    try:
        leader = {"id": "registrar-7c9d/1", "namespaces": ["shop"], "podSelector": None}
        await etcd.put("/etcd-registrar/default/leader", json.dumps(leader))
        await etcd.put("/etcd-registrar/east/leases/1", "{}")
    finally:
        await etcd.close()
    endpoints = ("--etcd-endpoints", etcd_server.endpoint)
    mismatch, matching = await asyncio.gather(
        asyncio.to_thread(doctor_without_kubeconfig, tmp_path, *endpoints),
        asyncio.to_thread(doctor_without_kubeconfig, tmp_path, *endpoints, "--namespace", "shop"),
    )
    failed = (
        "FAIL  leader: another installation with the same owner id leads (registrar-7c9d/1) "
        "and watches shop, this one all namespaces (both configuration generation 0): they "
        "would delete each other's keys; give each installation its own --owner-id (or, for a "
        "new configuration of this one, a higher --config-generation)"
    )
    assert f"\n{failed}\n      fix: {SCOPE_FIX}\n" in mismatch.stdout
    assert "ok    owner ids in etcd: default; other owner ids: east" in mismatch.stdout
    assert "ok    leader: registrar-7c9d/1, watching shop" in matching.stdout.splitlines()
