"""Fixtures shared by the e2e tests."""

from __future__ import annotations

import pytest

from tests.harness import Cluster
from tests.operator_process import CRD_FILE
from tests.realnode import RealNode


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
def real_node(cluster: Cluster) -> RealNode:
    """The real node beside kwok's (hack/realnode-up.sh): containerd, runc and a kubelet."""
    if cluster.external:
        pytest.fail(
            "the realnode tests need the local cluster's real node (hack/realnode-up.sh); "
            "deselect them with -m 'not realnode' on an external cluster",
            pytrace=False,
        )
    return RealNode.ensure_up()
