"""`etcd-registrar doctor` against the local cluster: passes when all is well, says what to fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness import Cluster, free_port

pytestmark = pytest.mark.e2e


def doctor(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "etcd_registrar", "doctor", *args]
    return subprocess.run(
        command, env=cluster.env(), capture_output=True, text=True, timeout=60, check=False
    )


def test_doctor_passes_on_a_healthy_setup(cluster: Cluster, crd: None) -> None:
    result = doctor(cluster)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout


def test_doctor_names_the_unreachable_etcd_and_the_fix(cluster: Cluster, crd: None) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = doctor(cluster, "--etcd-endpoints", dead, "--etcd-timeout", "1")
    assert result.returncode == 1
    assert f"FAIL  etcd reachable at {dead}" in result.stdout
    assert "fix: check --etcd-endpoints" in result.stdout
