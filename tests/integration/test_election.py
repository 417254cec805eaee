"""Leader election and fencing on a real etcd (issue #13): one leader at a time, a deposed
leader's write refused by etcd itself, and every destructive call of it too (issue #20), a
resignation handed over at once, and a second installation with another scope refused
loudly."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from bench.procs import etcd_requests
from etcd_registrar import leases as leases_module
from etcd_registrar.candidacy import Candidate, Standing
from etcd_registrar.claimstore import ClaimStore
from etcd_registrar.election import Election
from etcd_registrar.etcd import Etcd, EtcdConfig, Fence
from etcd_registrar.port import EtcdPort
from etcd_registrar.registry import Registry
from etcd_registrar.supervisor import Loop
from etcd_registrar.term import Term
from tests.aio import eventually, holds
from tests.harness import EtcdServer
from tests.integration.test_registry import endpoints
from tests.listeners import Outcomes, Setbacks

pytestmark = pytest.mark.integration

SHOP = ("shop",)
INSTALLATION = "registrar/etcd-registrar"


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[Etcd]:
    client = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,), timeout=2))
    yield client
    await client.close()


def candidate(
    etcd: EtcdPort,
    name: str,
    namespaces: tuple[str, ...] = SHOP,
    *,
    installation: str = INSTALLATION,
    generation: int = 1,
    cluster: str = "",
) -> Election:
    """A replica of installation `installation`, in configuration `generation`, of the
    cluster `cluster`."""
    replica = Candidate(name, namespaces, None, installation, generation, cluster)
    return Election(etcd, "ha", replica, Outcomes(), ttl=2)


@contextlib.asynccontextmanager
async def leading_then(leader: Election, other: Election) -> AsyncIterator[Loop]:
    """`leader` runs until it leads, then `other` runs beside it; yields the leader's loop.
    Both are stopped afterwards."""
    first = Loop(leader.candidate.id, leader.run).start()
    loops = [first]
    try:
        await eventually(lambda: leader.leading, 5, f"{leader.candidate.id} leads")
        loops.append(Loop(other.candidate.id, other.run).start())
        yield first
    finally:
        for loop in loops:
            await loop.stop()


async def test_one_leader_and_a_resignation_hands_over_at_once(etcd: Etcd) -> None:
    a, b = candidate(etcd, "a"), candidate(etcd, "b")
    async with leading_then(a, b):
        await eventually(lambda: b.leader == "a", 5, "b stands by for a")
        assert not b.leading and b.misconfigured is None
        started = asyncio.get_running_loop().time()
        await a.resign()
        await eventually(lambda: b.leading, 5, "b takes over")
        handover = asyncio.get_running_loop().time() - started
        assert handover < b.ttl, f"handover took {handover:.2f}s, the lease lives {b.ttl}s"
        assert not a.leading


async def test_a_standby_sends_nothing_while_the_leader_stays(
    etcd: Etcd, etcd_server: EtcdServer
) -> None:
    """A standby watches the leader key instead of asking for it: while the leader stays,
    etcd hears only the leader's keepalives of its election lease (at TTL/3). Then the
    leader's key goes (it stopped renewing it), and the standby takes over at once."""
    a, b = candidate(etcd, "a"), candidate(etcd, "b")
    async with leading_then(a, b) as first:
        await eventually(lambda: b.leader == "a", 5, "b stands by for a")
        loop = asyncio.get_running_loop()
        before, started = Counter(etcd_requests(etcd_server.listen_url)), loop.time()
        await asyncio.sleep(3 * a.ttl)  # the window measured
        added = Counter(etcd_requests(etcd_server.listen_url)) - before
        window = loop.time() - started
        assert set(added) <= {"LeaseKeepAlive"}, added
        assert added["LeaseKeepAlive"] <= window / (a.ttl / 3) + 1, added
        await first.stop()  # a dies without resigning: its key lives out its lease
        await eventually(lambda: b.leading, 2 * b.ttl, "b takes over once the lease ends")


async def test_a_deposed_leaders_writes_are_refused_by_etcd(
    etcd: Etcd, etcd_server: EtcdServer
) -> None:
    """The old leader still believes it leads (its process was frozen past its lease); its
    fence no longer matches the leader key, so etcd applies none of its writes."""
    stale = Registry(
        Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,))), Term(), Setbacks(), owner="ha"
    )
    await stale.start()
    try:
        old = candidate(etcd, "old")
        lease = await etcd.grant(2)
        won, holder = await etcd.campaign(old.key, '{"id": "old"}', lease)
        assert won and holder is not None
        stale.term.begin(Fence(old.key, holder.create_revision))
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
            assert not stale.term.leading
            assert "refused" in stale.term.reason
        finally:
            await loop.stop()
    finally:
        await stale.close()


async def frozen_leader(etcd: Etcd, stale: Registry) -> int:
    """`stale` leads, fenced by a leader key of its own; returns that key's election lease,
    whose revocation stands for the leader's process frozen past it (no election runs for
    it, so it goes on believing it leads)."""
    lease = await etcd.grant(2)
    won, holder = await etcd.campaign("/etcd-registrar/ha/leader", '{"id": "old"}', lease)
    assert won and holder is not None
    stale.term.begin(Fence(holder.key, holder.create_revision))
    return lease


async def elect(etcd_server: EtcdServer, loops: list[Loop]) -> Fence:
    """A new leader, elected by a real election; its fence."""
    cfg = EtcdConfig(endpoints=(etcd_server.endpoint,), timeout=2)
    election = candidate(Etcd(cfg), "new")
    loops.append(Loop("election-new", election.run).start())
    await eventually(lambda: election.leading, 5, "the new leader elected")
    assert election.fence is not None
    return election.fence


async def test_a_deposed_leaders_lease_retire_spares_the_new_leaders_keys(
    etcd: Etcd, etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 2, R2-5: the old leader retires a lease it believes empty after the new leader
    adopted it and put a key of a ready pod on it. The retire is fenced: the key survives."""
    monkeypatch.setattr(leases_module, "EMPTY_LEASE_GRACE", 2.0)
    cfg = EtcdConfig(endpoints=(etcd_server.endpoint,), timeout=2)
    old, new = (
        Registry(Etcd(cfg), Term(), Setbacks(), owner="ha"),
        Registry(Etcd(cfg), Term(), Setbacks(), owner="ha"),
    )
    await old.start()
    loops: list[Loop] = []
    try:
        election_lease = await frozen_leader(etcd, old)
        a, b = endpoints(2)
        await old.submit([a], [])
        lease = old.held[a.key].lease
        await old.submit([], [a.key])  # its lease goes empty: retired after the grace

        await etcd.revoke(election_lease)  # frozen past its election lease: a new leader
        fence = await elect(etcd_server, loops)
        await new.start()
        await new.take_over()  # adopts the live, empty lease
        new.term.begin(fence)
        await new.submit([b], [])
        assert new.held[b.key].lease == lease  # the new leader's key on that lease
        before = fenced()

        # The old leader resumes; its keepalive loop retires the lease before it notices.
        await eventually(lambda: fenced() > before, 5, "the old leader's retire refused")
        assert lease in old.leases.by_id  # renewed again, as a standby renews every lease
        present = lambda: etcd.get_many([b.key])  # noqa: E731
        await holds(present, 1.5, "the new leader's key was deleted by the old leader")
        assert (await etcd.time_to_live(lease)).alive
    finally:
        for loop in loops:
            await loop.stop()
        await old.close()
        await new.close()


async def test_a_deposed_leader_destroys_nothing(
    etcd: Etcd, etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader that does not know it was deposed tries each destructive call: a lease
    retire (record delete and revoke), a claim release, a key delete and a resignation.
    etcd refuses every one: the new leader's registry is left as it was."""
    monkeypatch.setattr(leases_module, "EMPTY_LEASE_GRACE", 0.5)
    cfg = EtcdConfig(endpoints=(etcd_server.endpoint,), timeout=2)
    stale = Registry(Etcd(cfg), Term(), Setbacks(), owner="ha")
    await stale.start()
    # The claim store learns of the loss on its own: the registry still believes it leads.
    claims = ClaimStore(stale.etcd, Term(), "ha")
    loops = [Loop("claims", claims.run).start()]
    try:
        election_lease = await frozen_leader(etcd, stale)
        old_fence = stale.term.fence()
        claims.term.begin(old_fence)
        a, b = endpoints(1)[0], endpoints(1, service="other")[0]
        await stale.submit([a, b], [])
        claims.record("/services/goods/", "shop")
        claim = claims.prefix + "/services/goods/"
        await eventually(lambda: etcd.get_many([claim]), 5, "the claim recorded")
        lease = stale.held[b.key].lease

        await etcd.revoke(election_lease)
        await elect(etcd_server, loops)
        before = await keys(etcd)

        refused = fenced()
        stale.leases.free(lease, b.key)  # it believes the lease empty: retired after the grace
        await eventually(lambda: fenced() > refused, 5, "the stale leader's retire refused")
        claims.record("/services/goods/", None)  # a release
        await eventually(lambda: not claims.term.leading, 5, "the claim store fenced")
        await stale.submit([], [a.key])  # a delete
        old_election = candidate(stale.etcd, "old")
        old_election.fence = old_fence
        await old_election.resign()  # a resignation deleting the new leader's key

        async def unchanged() -> bool:
            return await keys(etcd) == before

        await holds(unchanged, 1.5, "a deposed leader deleted keys")
        assert (await etcd.time_to_live(lease)).alive
        assert not stale.term.leading
    finally:
        for loop in loops:
            await loop.stop()
        await stale.close()


def fenced() -> float:
    """Destructive calls etcd refused so far, fenced (a process-wide counter)."""
    return REGISTRY.get_sample_value("etcd_registrar_fenced_writes_total") or 0.0


async def keys(etcd: Etcd) -> set[str]:
    return {kv.key for kv in (await etcd.get_prefix("/"))[0]}


async def test_a_second_installation_with_another_scope_is_refused(etcd: Etcd) -> None:
    leader, other = candidate(etcd, "a"), candidate(etcd, "b", ("team-b",))
    async with leading_then(leader, other):
        reason = await eventually(lambda: other.misconfigured, 5, "b refuses to stand by")
        assert "--owner-id" in reason and "team-b" in reason
        assert not other.leading
        value = json.loads((await etcd.get_many([leader.key]))[leader.key].value)
        assert value == {
            "id": "a",
            "namespaces": ["shop"],
            "podSelector": None,
            "installation": INSTALLATION,
            "generation": 1,
            "cluster": "",
        }


async def resign_and_time_takeover(old: Election, old_loop: Loop, new: Election) -> float:
    """Stop `old` (its replica gone, as at the end of a rollout); seconds until `new` leads."""
    await old_loop.stop()
    started = asyncio.get_running_loop().time()
    await old.resign()
    await eventually(lambda: new.leading, 3 * new.ttl, "the remaining replica leads")
    return asyncio.get_running_loop().time() - started


async def test_a_newer_configuration_stands_by_healthy_then_leads_at_once(etcd: Etcd) -> None:
    """Review 2, R2-3: a helm upgrade that adds a watched namespace. The new replica stands
    by healthy (so a maxUnavailable-0 rollout proceeds) and leads within one election TTL of
    the old leader's exit."""
    old = candidate(etcd, "old", generation=1)
    new = candidate(etcd, "new", ("shop", "team-b"), generation=2)
    async with leading_then(old, new) as first:
        await eventually(lambda: new.verdict.standing is Standing.SUCCESSOR, 5, "new waits")
        assert new.misconfigured is None and not new.leading
        assert "team-b" in new.verdict.reason
        takeover = await resign_and_time_takeover(old, first, new)
        assert takeover < new.ttl, f"the new configuration led after {takeover:.2f}s"
        assert new.misconfigured is None


async def test_an_older_configuration_defers_to_a_newer_one(etcd: Etcd) -> None:
    """A replica of the old configuration seeing the new one lead (a rollout half done)
    stands by healthy; it leads when the key stays vacant, but only after an election TTL,
    so a live replica of the newer configuration would lead first."""
    new = candidate(etcd, "new", ("shop", "team-b"), generation=2)
    old = candidate(etcd, "old", generation=1)
    async with leading_then(new, old) as first:
        await eventually(lambda: old.verdict.standing is Standing.SUPERSEDED, 5, "old waits")
        assert old.misconfigured is None and not old.leading
        takeover = await resign_and_time_takeover(new, first, old)
        assert takeover >= old.ttl, f"the older configuration led after {takeover:.2f}s"


async def test_a_refused_replica_never_latches(etcd: Etcd) -> None:
    """Another installation's leader (same scope, another installation name) is refused
    loudly; once that leader is gone and no replica of it takes the key, the refused
    replica leads after an election TTL: nothing is ever left without a leader."""
    theirs = candidate(etcd, "theirs", installation="other/etcd-registrar")
    ours = candidate(etcd, "ours")
    async with leading_then(theirs, ours) as first:
        reason = await eventually(lambda: ours.misconfigured, 5, "ours refuses")
        assert "other/etcd-registrar" in reason and "--owner-id" in reason
        await resign_and_time_takeover(theirs, first, ours)
        assert ours.misconfigured is None


async def test_a_second_cluster_with_the_same_owner_id_never_leads(
    etcd: Etcd, etcd_server: EtcdServer
) -> None:
    """Review 2, R2-4: two clusters share one etcd and one owner id. The second is refused
    loudly, naming the first; it neither adopts nor renews the first's leases, and it does
    not lead even while the first has no leader key, as long as the first's records live.
    Once they are gone (the first cluster is gone), it leads: nothing latches."""
    cfg = EtcdConfig(endpoints=(etcd_server.endpoint,), timeout=2)
    first = Registry(Etcd(cfg), Term(), Setbacks(), owner="ha", cluster="uid-a")
    await first.start()
    second = Registry(Etcd(cfg), Term(), Setbacks(), owner="ha", cluster="uid-b")
    ours, theirs = candidate(etcd, "a", cluster="uid-a"), candidate(etcd, "b", cluster="uid-b")
    loops = [Loop("a", ours.run).start()]
    try:
        fence = await eventually(lambda: ours.fence, 5, "a leads")
        await first.take_over()
        first.term.begin(fence)
        (key,) = endpoints(1)
        await first.submit([key], [])
        lease = first.held[key.key].lease

        await second.start()  # adopts nothing of the other cluster
        assert second.leases.by_id == {}
        loops.append(Loop("b", theirs.run).start())
        reason = await eventually(lambda: theirs.misconfigured, 5, "b refuses")
        assert "uid-a" in reason and "--owner-id" in reason
        assert theirs.verdict.standing is Standing.FOREIGN
        assert REGISTRY.get_sample_value("etcd_registrar_foreign_cluster") == 1.0
        # a standby (its term never began): it follows the recorded leases...
        with contextlib.suppress(TimeoutError):  # ...reads them, then waits for a change
            await asyncio.wait_for(second.follow(), 2)
        assert second.leases.by_id == {}  # nor renews its leases

        # The first cluster's leader goes; its lease lives on (a replica of it renews it).
        await loops[0].stop()
        await ours.resign()
        await holds(lambda: not theirs.leading, 3 * theirs.ttl, "the second cluster leads")
        assert (await etcd.get_many([key.key]))[key.key].lease == lease

        await first.close()  # the first cluster is gone: its leases end
        await etcd.revoke(lease)
        await eventually(lambda: theirs.leading, 4 * theirs.ttl, "the second cluster leads")
        assert theirs.misconfigured is None
        assert REGISTRY.get_sample_value("etcd_registrar_foreign_cluster") == 0.0
    finally:
        for loop in loops:
            await loop.stop()
        await second.close()


async def test_a_replica_of_one_cluster_stands_by_for_its_own(etcd: Etcd) -> None:
    """The cluster identity in the leader key and records tells nothing apart within one
    cluster: a standby of the same cluster stands by, healthy, and takes over at once."""
    a, b = candidate(etcd, "a", cluster="uid-a"), candidate(etcd, "b", cluster="uid-a")
    async with leading_then(a, b) as first:
        await eventually(lambda: b.leader == "a", 5, "b stands by")
        assert b.verdict.standing is Standing.STANDBY
        takeover = await resign_and_time_takeover(a, first, b)
        assert takeover < b.ttl
