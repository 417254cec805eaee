"""Fixtures of the integration tests: etcd clients, etcd servers and clusters of both
versions (Debian's 3.4 and the 3.6 most users run), and a controller on a real registry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from etcd_registrar.claimstore import ClaimStore
from etcd_registrar.controller import Controller
from etcd_registrar.etcd import Etcd, EtcdConfig
from etcd_registrar.registry import Registry
from etcd_registrar.term import Term
from tests.harness import EtcdCluster, EtcdServer, built_etcd_path, free_port
from tests.listeners import Setbacks, offline_controller

OWNER = "t"  # the owner id of the registries under test


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


@pytest.fixture
async def registry(etcd_server: EtcdServer) -> AsyncIterator[Registry]:
    """A started registry on `etcd_server`, closed (not revoked) afterwards."""
    reg = Registry(
        Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,), timeout=2)),
        Term.alone(),
        Setbacks(),
        owner=OWNER,
    )
    await reg.start()
    yield reg
    await reg.close()


@pytest.fixture
async def reader(etcd_server: EtcdServer) -> AsyncIterator[Etcd]:
    """A separate client that reads etcd the way a consumer would."""
    client = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,), timeout=2))
    yield client
    await client.close()


@pytest.fixture
async def controller(etcd_server: EtcdServer) -> AsyncIterator[Controller]:
    """A controller on a running registry of a private etcd."""
    etcd, term = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,))), Term.alone()
    claims = ClaimStore(etcd, term, "c")  # records once its loop runs
    controller = offline_controller(etcd, term, claims, "c")
    await controller.registry.start()
    # The sweep and status loops are not started: they are the only users of the API client.
    yield controller
    await controller.registry.close()


class Kubeconfig(NamedTuple):
    path: Path
    server: str


@pytest.fixture
def unreachable_kubeconfig(tmp_path: Path) -> Kubeconfig:
    """A kubeconfig whose API server is a port on 127.0.0.1 nobody listens on."""
    server = f"https://127.0.0.1:{free_port()}"
    cluster = {"server": server, "insecure-skip-tls-verify": True}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "c", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))  # JSON is YAML
    return Kubeconfig(path, server)
