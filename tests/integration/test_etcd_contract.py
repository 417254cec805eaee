"""The etcd contract (tests/etcd_contract.py) on real etcd, 3.4 and 3.6: what the in-memory
etcd of the fast tests must do, checked against what it stands for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from etcd_registrar.etcd import Etcd, EtcdConfig
from etcd_registrar.port import EtcdPort
from tests.etcd_contract import Advance, EtcdContract
from tests.harness import EtcdServer

pytestmark = pytest.mark.integration


@pytest.fixture
def contract_etcd(etcd_bin: str | None) -> Iterator[EtcdServer]:
    with EtcdServer(etcd_bin=etcd_bin) as server:
        server.start()
        yield server


@pytest.fixture
async def port(contract_etcd: EtcdServer) -> AsyncIterator[EtcdPort]:
    client = Etcd(EtcdConfig(endpoints=(contract_etcd.endpoint,), timeout=5))
    yield client
    await client.close()


@pytest.fixture
def advance() -> Advance:
    return asyncio.sleep


class TestRealEtcd(EtcdContract):
    pass
