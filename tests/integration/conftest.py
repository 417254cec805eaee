"""Fixtures for tests against both etcd versions: Debian's 3.4 and the 3.6 most users run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import EtcdCluster, built_etcd_path


@pytest.fixture(params=["debian-3.4", "built-3.6"])
def etcd_bin(request: pytest.FixtureRequest) -> str | None:
    """The etcd server binary (None: Debian's on PATH)."""
    if request.param == "debian-3.4":
        return None
    binary = built_etcd_path()
    if binary is None:
        pytest.fail("etcd 3.6 is not built: run `make tools`", pytrace=False)
    return binary


@pytest.fixture
def etcd_cluster(etcd_bin: str | None) -> Iterator[EtcdCluster]:
    """Three members on loopback, whose network a test can partition."""
    with EtcdCluster(etcd_bin=etcd_bin) as cluster:
        yield cluster
