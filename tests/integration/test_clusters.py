"""Claims hold across clusters sharing one registry etcd (#20 item 3, guarantee 10): each
operator follows the claims the other owner ids record. A namespace of the same name in the
other cluster is the same tenant (namespace sameness); another namespace needs the owner's
shareWith. Two operators of different owner ids stand in for the two clusters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from etcd_registrar.claimstore import ClaimStore
from etcd_registrar.controller import Controller, Notice
from etcd_registrar.etcd import Etcd, EtcdConfig
from etcd_registrar.term import Term
from tests.aio import eventually
from tests.harness import EtcdServer
from tests.listeners import offline_controller
from tests.unit.builders import opt_in, pod_body, registration_body

pytestmark = pytest.mark.integration


@asynccontextmanager
async def operator(etcd_server: EtcdServer, owner: str) -> AsyncIterator[Controller]:
    """One cluster's operator: its registry, its claim records, following everyone's."""
    etcd, term = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,))), Term.alone()
    store = ClaimStore(etcd, term, owner, cluster=f"uid-{owner}")
    controller = offline_controller(etcd, term, store, owner)
    await controller.registry.start()
    tasks = [asyncio.create_task(store.run()), asyncio.create_task(store.follow(controller))]
    try:
        await eventually(store.synced.is_set, 5, f"{owner} read the claims")
        yield controller
    finally:
        for task in tasks:
            task.cancel()
        await controller.registry.close()


def warnings(controller: Controller, body: dict[str, object]) -> list[str]:
    outcome = controller.on_pod(None, body)
    return [n.message for n in outcome.now if isinstance(n, Notice) and n.type == "Warning"]


async def test_a_claim_made_in_one_cluster_holds_in_the_other(etcd_server: EtcdServer) -> None:
    async with (
        operator(etcd_server, "cluster-a") as a,
        operator(etcd_server, "cluster-b") as b,
    ):
        a.on_pod(None, pod_body(name="a0", namespace="team-b", annotations=opt_in("pay")))
        pay = "/services/pay/"
        await eventually(lambda: pay in b.state.tenancy.remote.values, 5, "b sees a's claim")

        # another namespace in cluster b: refused, told which cluster owns the range
        intruder = pod_body(name="x", namespace="team-a", annotations=opt_in("pay"))
        (refusal,) = [w for w in warnings(b, intruder) if "belong to namespace" in w]
        assert "team-b (owner id cluster-a, another operator sharing this etcd)" in refusal
        assert "/services/pay/x" not in b.state.claims
        # the owner shares in cluster a: cluster b admits team-a at once
        shared = registration_body({"shareWith": ["team-a"]}, name="pay", namespace="team-b")
        a.on_registration("ADDED", shared)

        def admitted() -> bool:
            b.on_pod("MODIFIED", intruder)
            return "/services/pay/x" in b.state.claims

        await eventually(admitted, 5, "the share honoured in the other cluster")

        # the same namespace in cluster b is the same tenant: its pods join the service (its
        # shares there are those of its registrations there)
        same = pod_body(name="b0", namespace="team-b", annotations=opt_in("pay"))
        assert warnings(b, same) == []
        assert "/services/pay/b0" in b.state.claims


async def test_of_two_clusters_the_older_claim_stands(etcd_server: EtcdServer) -> None:
    """Two namespaces claim one range in two clusters: the younger claim yields."""
    async with operator(etcd_server, "cluster-a") as a:
        a.on_pod(None, pod_body(name="a0", namespace="team-a", annotations=opt_in("pay")))
        await eventually(lambda: "/services/pay/" in a.state.tenancy.revisions, 5, "recorded")
        async with operator(etcd_server, "cluster-b") as b:
            late = pod_body(name="b0", namespace="team-b", annotations=opt_in("pay"))
            assert [w for w in warnings(b, late) if "owner id cluster-a" in w]
            assert b.state.tenancy.owner("/services/pay/") is None
            assert a.state.tenancy.owner("/services/pay/") == "team-a"
