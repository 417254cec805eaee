"""The etcd contract (tests/etcd_contract.py) on the in-memory etcd, on a clock of its own."""

from __future__ import annotations

import pytest

from etcd_registrar.memory import MemoryEtcd
from etcd_registrar.port import EtcdPort
from tests.etcd_contract import Advance, EtcdContract


class Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def port(clock: Clock) -> EtcdPort:
    return MemoryEtcd(clock)


@pytest.fixture
def advance(clock: Clock) -> Advance:
    return clock.advance


class TestMemoryEtcd(EtcdContract):
    pass
