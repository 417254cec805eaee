"""Fixtures shared by the e2e tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import Cluster, component_running, run_hack_script
from tests.operator_process import CRD_FILE
from tests.realnode import RealNode

REALNODE_DOWN_TIMEOUT = 120.0  # its pods' containers get their grace period first


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    """The ServiceRegistration CRD, installed and established."""
    cluster.kubectl("apply", "-f", str(CRD_FILE))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/serviceregistrations.etcd-registrar.io"
    )


@pytest.fixture
def prefix(namespace: str) -> str:
    """The key prefix of one test: another test's leftovers can neither slow nor fool it."""
    return f"/sd-{namespace}"


@pytest.fixture(scope="session")
def real_node(cluster: Cluster) -> Iterator[RealNode]:
    """The real node beside kwok's (hack/realnode-up.sh): containerd, runc and a kubelet.
    Stopped at the end of the run if the run started it."""
    if cluster.external:
        pytest.fail(
            "the realnode tests need the local cluster's real node (hack/realnode-up.sh); "
            "deselect them with -m 'not realnode' on an external cluster",
            pytrace=False,
        )
    was_running = component_running("kubelet")
    yield RealNode.ensure_up()
    if not was_running:
        run_hack_script("realnode-down.sh", REALNODE_DOWN_TIMEOUT)
