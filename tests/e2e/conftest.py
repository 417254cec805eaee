"""Fixtures shared by the e2e tests."""

from __future__ import annotations

import pytest

from tests.harness import Cluster
from tests.operator_process import CRD_FILE


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> None:
    """The ServiceRegistration CRD, installed and established."""
    cluster.kubectl("apply", "-f", str(CRD_FILE))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/serviceregistrations.etcd-registrar.io"
    )
