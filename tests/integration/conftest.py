"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from etcd_registrar.controller import Controller
from etcd_registrar.etcd import Etcd, EtcdConfig
from etcd_registrar.kube import Kube
from etcd_registrar.registry import Registry
from etcd_registrar.source import Defaults
from tests.harness import EtcdServer


@pytest.fixture
async def controller(etcd_server: EtcdServer) -> AsyncIterator[Controller]:
    """A controller on a running registry of a private etcd."""
    registry = Registry(Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,))), owner="c")
    await registry.start()
    # The sweep and status loops are not started: they are the only users of the API client.
    yield Controller(registry, Kube(api=None), Defaults())
    await registry.close()
