"""Shared fixtures. The logic lives in tests/harness.py; nothing here starts a cluster or
an etcd unless a test asks for the fixture (unit tests run without either)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import (
    Cluster,
    EtcdServer,
    ToolchainMissing,
    component_running,
    run_hack_script,
)

CLUSTER_DOWN_TIMEOUT = 180.0  # the real node too: containers get their grace period


@pytest.fixture(scope="session", autouse=True)
def _leave_the_machine_as_found() -> Iterator[None]:
    """A local cluster this run started (through the e2e fixtures, or bench.run in the bench
    smoke test) is stopped at its end, with its real node; one already running is kept."""
    was_running = component_running("kube-apiserver")
    yield
    if not was_running and component_running("kube-apiserver"):
        run_hack_script("cluster-down.sh", CLUSTER_DOWN_TIMEOUT)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The local cluster (hack/cluster-up.sh), or $KUBECONFIG + $ETCD_REGISTRAR_ETCD_ENDPOINTS."""
    try:
        return Cluster.ensure_up()
    except ToolchainMissing as exc:
        missing = str(exc)  # failed outside the except block: no exception chain in the report
    pytest.fail(f"e2e toolchain missing: {missing}", pytrace=False)


@pytest.fixture(scope="session")
def registry_etcd_endpoints(cluster: Cluster) -> str:
    """Client URL(s) of the registry etcd that belongs to the cluster."""
    return cluster.etcd_endpoints


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted afterwards without waiting."""
    name = cluster.create_namespace(request.node.name)
    yield name
    cluster.delete_namespace(name)


@pytest.fixture
def etcd_server() -> Iterator[EtcdServer]:
    """A private etcd for one test (stop, kill, pause, wipe it at will); removed afterwards."""
    try:
        server = EtcdServer()
    except ToolchainMissing as exc:
        missing = str(exc)
        pytest.fail(f"integration toolchain missing: {missing}", pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.close()
