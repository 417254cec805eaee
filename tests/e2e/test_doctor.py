"""`etcd-registrar doctor` against the local cluster: passes when all is well, says what to fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from etcd_registrar.crd import crd as crd_manifest
from etcd_registrar.doctor import CRD_FIX, Problem, Report, crd_served
from tests.harness import Cluster, EtcdServer, built_etcd_path, free_port

pytestmark = pytest.mark.e2e


def doctor(
    cluster: Cluster, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "etcd_registrar", "doctor", *args]
    return subprocess.run(
        command,
        env={**cluster.env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_each(output: str) -> None:
    """Each check is one line, a failure one more for its fix: no exception dumps."""
    lines = output.splitlines()
    for before, line in zip(["", *lines], lines, strict=False):
        is_fix = line.startswith("      fix: ") and before.startswith("FAIL  ")
        assert (
            line.startswith(("ok    ", "FAIL  ", "skip  ", "warn  ")) or is_fix or line == lines[-1]
        )


def test_doctor_passes_on_a_healthy_setup(cluster: Cluster, crd: None) -> None:
    result = doctor(cluster)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout
    assert "ok    CRD installed: serviceregistrations.etcd-registrar.io/v1alpha1" in result.stdout
    assert "ok    CRD is this version's: the schema of v1alpha1 is this version's" in result.stdout
    assert "warn  leader: none: no operator of owner id default runs" in result.stdout
    assert_one_line_each(result.stdout)


def test_doctor_finds_a_crd_of_another_version(cluster: Cluster, crd: None) -> None:
    """An older CRD (here: without shareWith's maxItems) lets through what this operator
    refuses. The CRD is put back afterwards: other tests share the cluster."""
    older = json.loads(json.dumps(crd_manifest()))
    [version] = older["spec"]["versions"]
    del version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["shareWith"][
        "maxItems"
    ]
    try:
        cluster.apply(older)
        result = doctor(cluster)
    finally:
        cluster.apply(crd_manifest())
    assert result.returncode == 1
    failed = (
        "FAIL  CRD is this version's: the installed serviceregistrations.etcd-registrar.io "
        "v1alpha1 schema is not this version's (etcd-registrar crds | kubectl diff -f - "
        "shows the difference)"
    )
    assert f"\n{failed}\n      fix: {CRD_FIX}\n" in result.stdout


def test_doctor_names_the_unreachable_etcd_and_the_fix(cluster: Cluster, crd: None) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = doctor(cluster, "--etcd-endpoints", dead, "--etcd-timeout", "1")
    assert result.returncode == 1
    assert f"FAIL  etcd reachable at {dead}" in result.stdout
    assert "fix: check --etcd-endpoints" in result.stdout
    # one root cause, one FAIL: the lease write and the registry prefix's permissions wait
    assert "skip  etcd lease and write: needs etcd, which failed above" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 check failed, 4 skipped"


def test_a_missing_crd_is_one_line_with_the_command_that_installs_it(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asked of the real API server for a group nobody installed (the real CRD stays: other
    tests share the cluster)."""
    api = cluster.api_client()
    with pytest.raises(Problem) as missing:
        crd_served(api, group="missing.etcd-registrar.io")
    assert str(missing.value) == (
        "the CRD serviceregistrations.missing.etcd-registrar.io (v1alpha1) is not installed"
    )
    report = Report()
    report.check("CRD installed", lambda: crd_served(api, group="missing.etcd-registrar.io"), "")
    assert capsys.readouterr().out.splitlines() == [
        "FAIL  CRD installed: the CRD serviceregistrations.missing.etcd-registrar.io (v1alpha1)"
        " is not installed",
        f"      fix: {CRD_FIX}",
    ]
    assert "kubectl apply -f" in CRD_FIX and report.failures == 1


def test_doctor_lists_each_missing_right_in_one_line(
    cluster: Cluster, namespace: str, crd: None, tmp_path: Path
) -> None:
    """A ServiceAccount with no grants at all: every right fails on its own line, including
    those only kopf uses (CRDs and, with --namespace, namespaces)."""
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    kubeconfig = cluster.write_service_account_kubeconfig(namespace, "nobody", tmp_path / "kc")
    result = doctor(cluster, "--namespace", namespace, env={"KUBECONFIG": str(kubeconfig)})
    assert result.returncode == 1
    assert_one_line_each(result.stdout)
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL  ")]
    for right in (
        f"can list pods in {namespace}",
        f"can patch serviceregistrations.etcd-registrar.io/status in {namespace}",
        f"can patch pods/status in {namespace}",  # the readiness gate
        "can watch customresourcedefinitions.apiextensions.k8s.io in the cluster",
        "can list namespaces in the cluster",
        "can watch namespaces in the cluster",
    ):
        assert any(line.startswith(f"FAIL  {right}: ") for line in failed), right
    # the CRD's own check needs the list right that failed: skipped, saying so
    skew = "skip  CRD is this version's: needs 'can list customresourcedefinitions"
    assert any(line.startswith(skew) for line in result.stdout.splitlines())
    assert result.stdout.splitlines()[-1] == f"{len(failed)} checks failed, 1 skipped"
    assert "ok    CRD installed" in result.stdout  # discovery: no grant needed


# --------------------------------------------------------------------------- etcd with auth


PASSWORD = "registrar-secret"  # noqa: S105 - a throwaway etcd of this test


@pytest.fixture
def etcd_with_auth() -> Iterator[EtcdServer]:
    """etcd 3.6 with auth enabled and a least-privilege user `registrar`: read/write on
    /etcd-registrar/ only, no root role (which etcd 3.6 requires for the Status call)."""
    binary = built_etcd_path()
    if binary is None:
        pytest.fail("etcd 3.6 is not built: run `make tools`", pytrace=False)
    etcdctl = shutil.which("etcdctl")
    if etcdctl is None:
        pytest.fail("etcdctl not found: run `make deps` (Debian etcd-client)", pytrace=False)
    with EtcdServer(etcd_bin=binary) as server:

        def ctl(*args: str) -> None:
            subprocess.run(
                [etcdctl, f"--endpoints={server.endpoint}", *args],
                env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
                capture_output=True,
                check=True,
                timeout=30,
            )

        ctl("user", "add", "root", "--new-user-password=root-secret")
        ctl("user", "grant-role", "root", "root")
        ctl("role", "add", "registrar")
        for prefix in ("/etcd-registrar/", "/services/"):  # its bookkeeping and its keys
            ctl("role", "grant-permission", "registrar", "--prefix=true", "readwrite", prefix)
        ctl("user", "add", "registrar", f"--new-user-password={PASSWORD}")
        ctl("user", "grant-role", "registrar", "registrar")
        ctl("auth", "enable")
        yield server


def test_doctor_passes_for_a_least_privilege_etcd_user(
    cluster: Cluster, crd: None, etcd_with_auth: EtcdServer, tmp_path: Path
) -> None:
    """Reachability is the read /readyz makes, not Status (root only on some etcd releases
    with auth, e.g. 3.6.4; 3.6.16 answers it): a user with just the operator's rights
    passes, with the version when etcd shows it."""
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    args = ["--etcd-endpoints", etcd_with_auth.endpoint, "--etcd-username", "registrar"]
    result = doctor(cluster, *args, "--etcd-password-file", str(password))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok    etcd reachable at {etcd_with_auth.endpoint}: " in result.stdout
    assert "ok    etcd lease and write" in result.stdout

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    result = doctor(cluster, *args, "--etcd-password-file", str(wrong))
    assert result.returncode == 1
    assert "fix: check --etcd-username/--etcd-password-file" in result.stdout
