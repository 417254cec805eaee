"""The etcd contract (tests/etcd_contract.py) on real etcd, 3.4 and 3.6: what the in-memory
etcd of the fast tests must do, checked against what it stands for."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from etcd_registrar.etcd import Etcd
from etcd_registrar.port import EtcdPort
from tests.etcd_contract import Advance, EtcdContract
from tests.harness import EtcdServer

pytestmark = pytest.mark.integration


@pytest.fixture
def etcd_server(etcd_bin: str | None) -> Iterator[EtcdServer]:
    """Both versions: Debian's etcd 3.4 and the 3.6 most users run."""
    with EtcdServer(etcd_bin=etcd_bin) as server:
        yield server.start()


@pytest.fixture
def port(reader: Etcd) -> EtcdPort:
    return reader


@pytest.fixture
def advance() -> Advance:
    return asyncio.sleep


class TestRealEtcd(EtcdContract):
    pass
