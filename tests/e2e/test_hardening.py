"""One tenant's bad input or a failure path never stops the operator (issue #10), on the
local cluster and the registry etcd."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest

from etcd_registrar.app import App
from etcd_registrar.config import Settings
from tests.aio import eventually
from tests.e2e.test_registrar import registration
from tests.harness import Cluster, deployment_manifest, free_port, wait_for
from tests.operator_process import ConsumerWatch, OperatorProcess, registry_keys

pytestmark = pytest.mark.e2e

# Valid JSON and plain ASCII for the API server; a lone surrogate once decoded.
POISON = '{"k":"\\ud800"}'


@pytest.fixture
def other_namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.create_namespace("well-behaved")
    yield name
    cluster.delete_namespace(name)


def test_a_poisoned_pod_present_at_start_stops_no_other_tenant(
    cluster: Cluster, namespace: str, other_namespace: str, crd: None
) -> None:
    """The worst form of the poison pill: the bad pod exists before the operator starts,
    in a namespace whose format carries metadata. The other tenant's pods are registered
    and followed as usual; the bad pod gets a Warning that says what to fix."""
    evil = f"/poison-{namespace}"
    cluster.apply(registration("evil", prefix=evil, format="json"), namespace)
    poisoned = {"etcd-registrar.io/service": "evil", "etcd-registrar.io/metadata": POISON}
    cluster.create_deployment(namespace, deployment_manifest("evil", 1, annotations=poisoned))
    prefix = f"/well-behaved-{other_namespace}"
    cluster.apply(registration("goods", prefix=prefix, format="json"), other_namespace)
    opted_in = {"etcd-registrar.io/service": "goods"}
    cluster.create_deployment(
        other_namespace, deployment_manifest("goods", 2, annotations=opted_in)
    )
    cluster.wait_deployment_serving(namespace, "evil", 1)
    cluster.wait_deployment_serving(other_namespace, "goods", 2)

    operator = OperatorProcess(cluster, namespace, "--namespace", other_namespace).start()
    try:

        def goods_keys(count: int) -> bool:
            pods = cluster.pods_of_deployment(other_namespace, "goods")
            keys = registry_keys(cluster.etcd_endpoints, f"{prefix}/goods/")
            return len(keys) == count == sum(p.serving for p in pods)

        wait_for(lambda: goods_keys(2), 30, message="the well-behaved pods registered")
        cluster.scale(other_namespace, "goods", 3)
        wait_for(lambda: goods_keys(3), 30, message="the registry follows the scale-up")

        def warning() -> str | None:
            events = cluster.get_json("events", "-n", namespace)["items"]
            texts = [e["message"] for e in events if e.get("reason") == "InvalidRegistration"]
            return next((t for t in texts if "UTF-8" in t), None)

        assert "etcd-registrar.io/metadata" in wait_for(warning, 20, message="the Warning")
        assert registry_keys(cluster.etcd_endpoints, evil + "/") == {}
        assert operator.ready()  # alive, and its loops healthy
    finally:
        operator.stop()


async def test_a_registration_deleted_while_unwatched_is_forgotten(
    cluster: Cluster, namespace: str, crd: None
) -> None:
    """A watch that relists reports no deletions: the sweep's relist of the registrations
    forgets one that no longer exists, and its service falls back to the defaults."""
    settings = Settings(namespace=[namespace], health_port=0, metrics_port=0)
    app = App.create(settings, cluster.credentials())
    ghost = registration("ghost", prefix="/ghost")
    ghost["metadata"] = {"name": "ghost", "namespace": namespace, "uid": "u", "generation": 1}
    app.controller.on_registration("ADDED", ghost)  # seen once, then deleted unseen
    assert (namespace, "ghost") in app.controller.state.registrations
    cluster.apply(registration("real", prefix="/real"), namespace)
    await app.controller.relist_registrations()
    assert set(app.controller.state.registrations) == {(namespace, "real")}


async def test_a_failed_startup_leaves_no_port_bound(cluster: Cluster, namespace: str) -> None:
    """A startup that fails cleans up what it started, so kopf's retry binds again instead
    of failing with EADDRINUSE for ever."""
    health, metrics = free_port(), free_port()
    settings = Settings(
        namespace=[namespace],
        health_port=health,
        metrics_port=metrics,
        etcd_endpoints=[cluster.etcd_endpoints.split(",")[0]],
    )
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", metrics)
    try:
        with pytest.raises(OSError):
            await App.create(settings, cluster.credentials()).start()
    finally:
        blocker.close()
        await blocker.wait_closed()
    retry = App.create(settings, cluster.credentials())
    await asyncio.wait_for(retry.start(), 30)
    try:
        await eventually(lambda: retry.health.ready()[0], 30, "the retried operator ready")
    finally:
        await retry.stop()


def test_a_restart_publishes_nothing_in_the_default_layout(
    cluster: Cluster, namespace: str, crd: None
) -> None:
    """Pods are rendered only once the registrations are known: a restarted operator never
    publishes, even briefly, default-layout keys for a service a registration governs."""
    service = f"gov-{secrets.token_hex(3)}"
    prefix = f"/governed-{namespace}"
    cluster.apply(registration(service, prefix=prefix, format="json"), namespace)
    opt_in = {"etcd-registrar.io/service": service}
    cluster.create_deployment(namespace, deployment_manifest("goods", 3, annotations=opt_in))
    cluster.wait_deployment_serving(namespace, "goods", 3)
    first = OperatorProcess(cluster, namespace).start()
    wait_for(
        lambda: len(registry_keys(cluster.etcd_endpoints, f"{prefix}/{service}/")) == 3,
        30,
        message="registered under the registration's prefix",
    )
    first.stop()
    with ConsumerWatch(cluster.etcd_endpoints, f"/services/{service}/") as default_layout:
        second = OperatorProcess(cluster, namespace).start()
        try:
            cluster.scale(namespace, "goods", 4)
            wait_for(
                lambda: len(registry_keys(cluster.etcd_endpoints, f"{prefix}/{service}/")) == 4,
                30,
                message="the restarted operator follows the registration",
            )
        finally:
            second.stop()
    assert default_layout.events == []
