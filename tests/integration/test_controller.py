"""The controller's event path against a real etcd (no API server needed for pod events)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from etcd_registrar.controller import Controller
from etcd_registrar.etcd import Etcd, EtcdConfig
from etcd_registrar.kube import Kube
from etcd_registrar.registry import Registry
from etcd_registrar.source import Defaults
from tests.harness import EtcdServer
from tests.unit.builders import opt_in, pod_body, registration_body

pytestmark = pytest.mark.integration


@pytest.fixture
async def controller(etcd_server: EtcdServer) -> AsyncIterator[Controller]:
    registry = Registry(Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,))), owner="c")
    await registry.start()
    # The sweep and status loops are not started: they are the only users of the API client.
    yield Controller(registry, Kube(api=None), Defaults())
    await registry.close()


async def test_a_changed_value_under_the_same_key_is_rewritten(
    controller: Controller, etcd_server: EtcdServer
) -> None:
    """Same pod, same key, new IP: the key must follow at once, not at the next sweep."""
    reader = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
    try:
        for ip in ("10.0.0.5", "10.0.0.6"):
            outcome = controller.on_pod("MODIFIED", pod_body(ip=ip, annotations=opt_in("goods")))
            assert outcome.committed is not None
            await outcome.committed
            kvs, _ = await reader.get_prefix("/services/goods/")
            assert [(kv.key, kv.value) for kv in kvs] == [
                ("/services/goods/goods-abc", f"{ip}:8080")
            ]
    finally:
        await reader.close()


async def test_an_invalid_registration_blocks_its_service_instead_of_falling_back(
    controller: Controller, etcd_server: EtcdServer
) -> None:
    """Pods of a service whose only registration is invalid get no keys: not the defaults'."""
    bad = registration_body({"service": "goods", "format": "go-zero", "prefix": "/x"})
    controller.on_registration("ADDED", bad)
    assert controller.registrations["shop", "goods"].error  # the spec is refused
    controller.on_pod("ADDED", pod_body(annotations=opt_in("goods")))
    assert controller.claims == {}
    status = controller.status_of(("shop", "goods"))
    assert status["conditions"][0]["status"] == "False"
    controller.on_registration("DELETED", bad)  # removing it hands the pods to the defaults
    assert set(controller.claims) == {"/services/goods/goods-abc"}
