"""Leader election and fencing on a real etcd (issue #13): one leader at a time, a deposed
leader's write refused by etcd itself, a resignation handed over at once, and a second
installation with another scope refused loudly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping

import pytest

from etcd_registrar.election import Election
from etcd_registrar.etcd import Etcd, EtcdConfig, Fence
from etcd_registrar.registry import Registry
from etcd_registrar.supervisor import Loop
from tests.aio import eventually
from tests.harness import EtcdServer
from tests.integration.test_registry import endpoints

pytestmark = pytest.mark.integration

SCOPE = {"namespaces": ["shop"], "podSelector": None}


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[Etcd]:
    client = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,), timeout=2))
    yield client
    await client.close()


def candidate(etcd: Etcd, name: str, scope: Mapping[str, object] = SCOPE) -> Election:
    return Election(etcd, "ha", name, dict(scope), ttl=2)


async def test_one_leader_and_a_resignation_hands_over_at_once(etcd: Etcd) -> None:
    a, b = candidate(etcd, "a"), candidate(etcd, "b")
    loops = [Loop("election-a", a.run).start()]
    await eventually(lambda: a.leading, 5, "a leads")
    loops.append(Loop("election-b", b.run).start())
    try:
        await eventually(lambda: b.leader == "a", 5, "b stands by for a")
        assert not b.leading and b.misconfigured is None
        started = asyncio.get_running_loop().time()
        await a.resign()
        await eventually(lambda: b.leading, 5, "b takes over")
        handover = asyncio.get_running_loop().time() - started
        assert handover < b.ttl, f"handover took {handover:.2f}s, the lease lives {b.ttl}s"
        assert not a.leading
    finally:
        for loop in loops:
            await loop.stop()


async def test_a_deposed_leaders_writes_are_refused_by_etcd(
    etcd: Etcd, etcd_server: EtcdServer
) -> None:
    """The old leader still believes it leads (its process was frozen past its lease); its
    fence no longer matches the leader key, so etcd applies none of its writes."""
    stale = Registry(Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,))), owner="ha")
    await stale.start()
    fenced: list[str] = []
    stale.on_fenced = fenced.append
    try:
        old = candidate(etcd, "old")
        lease = await etcd.grant(2)
        won, holder = await etcd.campaign(old.key, '{"id": "old"}', lease)
        assert won and holder is not None
        stale.fence = Fence(old.key, holder.create_revision)
        first = endpoints(2)
        await stale.submit(first[:1], [])
        await etcd.revoke(lease)  # the old leader's lease lapsed while it was frozen
        new = candidate(etcd, "new")
        loop = Loop("election-new", new.run).start()
        try:
            await eventually(lambda: new.leading, 5, "the new leader elected")
            await stale.submit(first[1:], [first[0].key])
            keys = {kv.key for kv in (await etcd.get_prefix("/services/"))[0]}
            assert keys == {first[0].key}  # neither the put nor the delete applied
            assert fenced and "refused" in fenced[0]
            assert not stale.leading
        finally:
            await loop.stop()
    finally:
        await stale.close()


async def test_a_second_installation_with_another_scope_is_refused(etcd: Etcd) -> None:
    leader, other = candidate(etcd, "a"), candidate(etcd, "b", {"namespaces": ["team-b"]})
    loops = [Loop("election-a", leader.run).start()]
    await eventually(lambda: leader.leading, 5, "a leads")
    loops.append(Loop("election-b", other.run).start())
    try:
        reason = await eventually(lambda: other.misconfigured, 5, "b refuses to stand by")
        assert "--owner-id" in reason and "team-b" in reason
        assert not other.leading
        value = json.loads((await etcd.get_many([leader.key]))[leader.key].value)
        assert value == {"id": "a", **SCOPE}
    finally:
        for loop in loops:
            await loop.stop()
