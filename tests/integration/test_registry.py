"""The registry against a real etcd: leases held, batched writes, outages survived."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence

import pytest

from etcd_registrar.etcd import Etcd, EtcdConfig, EtcdError, Fence, Op, TxnResult
from etcd_registrar.plan import plan
from etcd_registrar.registry import Registry
from etcd_registrar.source import Endpoint
from etcd_registrar.term import Term
from etcd_registrar.writer import Write
from tests.aio import eventually
from tests.harness import EtcdCluster, EtcdServer, wait_for
from tests.integration.conftest import OWNER
from tests.listeners import Setbacks

pytestmark = pytest.mark.integration

TTL = 2
FAILOVER_TTL = 5


def endpoints(n: int, service: str = "goods", ttl: int = TTL) -> list[Endpoint]:
    return [
        Endpoint(
            f"/services/{service}/pod-{i}",
            f"10.1.{i // 250}.{i % 250}:80",
            ttl,
            "shop",
            service,
            f"uid-{i}",
            f"pod-{i}",
            ("2026-01-01T00:00:00Z", "shop", f"pod-{i}"),
        )
        for i in range(n)
    ]


class Desired:
    """Stands in for the controller: replays the desired keys when a lease is lost."""

    def __init__(self, registry: Registry, wanted: list[Endpoint]) -> None:
        self.registry, self.by_key = registry, {e.key: e for e in wanted}
        registry.setbacks = self

    def lease_lost(self, keys: set[str]) -> None:
        self.registry.submit([self.by_key[k] for k in keys if k in self.by_key], [])

    def found_taken(self, keys: set[str]) -> None:
        pass

    def write_refused(self, write: Write, reason: str) -> None:
        pass


@pytest.fixture
def etcd_server(etcd_bin: str | None) -> Iterator[EtcdServer]:
    """Every registry test runs on Debian's etcd 3.4 and on the 3.6 most users run."""
    with EtcdServer(etcd_bin=etcd_bin) as server:
        server.start()
        yield server


def has_keys(reader: Etcd, wanted: list[Endpoint]) -> Callable[[], Awaitable[bool]]:
    expected = {e.key: e.value for e in wanted}

    async def check() -> bool:
        kvs, _ = await reader.get_prefix("/services/")
        return {kv.key: kv.value for kv in kvs} == expected and all(kv.lease for kv in kvs)

    return check


def on_live_leases(reader: Etcd, wanted: list[Endpoint]) -> Callable[[], Awaitable[bool]]:
    present = has_keys(reader, wanted)

    async def check() -> bool:
        if not await present():
            return False
        leases = {kv.lease for kv in (await reader.get_prefix("/services/"))[0]}
        remaining = [(await reader.time_to_live(lease)).ttl for lease in leases]
        return all(ttl > 0 for ttl in remaining)

    return check


async def test_leased_keys_outlive_several_ttls(registry: Registry, reader: Etcd) -> None:
    wanted = endpoints(20)
    await registry.submit(wanted, [])
    check = has_keys(reader, wanted)
    for _ in range(int(4 * TTL / 0.25)):  # four TTLs: only keepalives can hold them
        assert await check(), "keys vanished while the operator renewed their lease"
        await asyncio.sleep(0.25)


async def test_transactions_hold_at_most_127_guarded_ops(registry: Registry, reader: Etcd) -> None:
    sizes: list[int] = []
    real_txn = registry.etcd.txn

    async def counting_txn(ops: Sequence[Op], fence: Fence | None = None) -> TxnResult:
        sizes.append(len(ops))
        return await real_txn(ops, fence)

    def registry_ops() -> int:  # leaves out the lease records under /etcd-registrar/
        return sum(sizes) - len(registry.leases.by_id)

    registry.etcd.txn = counting_txn  # type: ignore[method-assign]
    wanted = endpoints(1000)
    await registry.submit(wanted, [])
    assert await has_keys(reader, wanted)()
    await registry.submit([], [e.key for e in wanted])
    assert (await reader.get_prefix("/services/"))[0] == []
    # Puts and deletes are nested guarded txns: 127 per txn (etcd counts the nesting), and
    # none refused as too large (a refusal would show as split batches: more ops in all)
    assert max(sizes) == 127 and registry_ops() == 2000, sizes


async def test_leases_are_pooled_not_per_key(registry: Registry, reader: Etcd) -> None:
    wanted = endpoints(2500)
    await registry.submit(wanted, [])
    kvs, _ = await reader.get_prefix("/services/")
    assert len(kvs) == 2500
    assert len({kv.lease for kv in kvs}) == 3  # at most 1000 keys per lease


async def test_unchanged_value_is_not_rewritten(registry: Registry, reader: Etcd) -> None:
    """The same desired state planned again, after etcd was re-read, writes nothing: the
    mod revisions stay. (A registry that rewrote unchanged values would bump them.)"""
    wanted = endpoints(5)
    await registry.submit(wanted, [])
    before = {kv.key: kv.mod_revision for kv in (await reader.get_prefix("/services/"))[0]}
    keys = [e.key for e in wanted]
    for _ in range(2):  # a pod event, then a sweep's re-read and plan
        await registry.refresh_view(keys)
        changes = plan(keys, {e.key: {e.pod_uid: e} for e in wanted}, registry.current_many(keys))
        await registry.submit(changes.puts, changes.deletes)
    after = {kv.key: kv.mod_revision for kv in (await reader.get_prefix("/services/"))[0]}
    assert after == before


@pytest.mark.parametrize("outage", ["kill-restart", "wipe", "hang-longer-than-ttl"])
async def test_full_set_returns_after_etcd_outage(
    outage: str, etcd_server: EtcdServer, registry: Registry, reader: Etcd
) -> None:
    wanted = endpoints(300)
    Desired(registry, wanted)
    await registry.submit(wanted, [])
    assert await has_keys(reader, wanted)()
    if outage == "kill-restart":
        etcd_server.kill()
        await asyncio.sleep(TTL)  # the outage itself: etcd is down this long
        await asyncio.to_thread(etcd_server.start)
    elif outage == "wipe":
        leases = {kv.lease for kv in (await reader.get_prefix("/services/"))[0]}
        await asyncio.to_thread(etcd_server.wipe)

        async def wiped() -> bool:
            # the old leases went with the data; the registry may already have re-put the
            # keys on new ones by the time the reader is back, so "empty" may never be seen
            return not leases & {kv.lease for kv in (await reader.get_prefix("/services/"))[0]}

        await eventually(wiped, 5, "the reader sees the wiped etcd", retry_on=(EtcdError,))
    else:
        etcd_server.pause()
        await asyncio.sleep(3 * TTL)  # frozen longer than the lease lives
        etcd_server.resume()
    # back = present on leases etcd reports alive (an expired lease may linger until etcd's
    # next expiry pass, and then takes its keys with it)
    await eventually(
        on_live_leases(reader, wanted), 20, f"all keys back after {outage}", retry_on=(EtcdError,)
    )
    # and they are held, not a one-off re-put: two TTLs later they are still on live leases
    # (etcd may still revoke a lease it found expired on waking; the registry re-puts at once)
    await asyncio.sleep(2 * TTL)
    await eventually(
        on_live_leases(reader, wanted), 5, f"keys still held after {outage}", retry_on=(EtcdError,)
    )


async def test_restarted_registry_adopts_leases(
    etcd_server: EtcdServer, registry: Registry, reader: Etcd
) -> None:
    wanted = endpoints(50)
    await registry.submit(wanted, [])
    revisions = {kv.key: kv.mod_revision for kv in (await reader.get_prefix("/services/"))[0]}
    await registry.close()  # a clean stop must leave the keys in place
    assert await has_keys(reader, wanted)()
    successor = Registry(
        Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,))), Term.alone(), Setbacks(), owner=OWNER
    )
    await successor.start()
    try:
        assert set(successor.held) == set(revisions)
        for _ in range(int(3 * TTL / 0.25)):  # renewed by the successor, never rewritten
            kvs, _ = await reader.get_prefix("/services/")
            assert {kv.key: kv.mod_revision for kv in kvs} == revisions
            await asyncio.sleep(0.25)
    finally:
        await successor.close()


async def test_foreign_keys_are_never_touched(registry: Registry, reader: Etcd) -> None:
    """Two checks keep another writer's key: the plan never deletes a key that is not on our
    lease, and the registry sends no delete for it even when asked to. Each fails alone."""
    foreign = "/services/goods/hand-written"
    await reader.put(foreign, "10.9.9.9:80")
    wanted = endpoints(3)
    await registry.submit(wanted, [])
    keys = {e.key for e in wanted} | {foreign}
    await registry.refresh_view(keys)  # a pod wanted it once: the view knows who holds it
    changes = plan(keys, {}, registry.current_many(keys))  # nobody wants anything now
    assert sorted(changes.deletes) == sorted(e.key for e in wanted)
    await registry.submit([], [*changes.deletes, foreign])  # asked to delete it anyway
    kvs, _ = await reader.get_prefix("/services/")
    assert [(kv.key, kv.value) for kv in kvs] == [(foreign, "10.9.9.9:80")]


async def test_a_delete_spares_a_key_another_writer_took_over(
    registry: Registry, reader: Etcd
) -> None:
    """Deletes are guarded by our lease: a key overwritten behind our back (another writer's
    value, not on our lease) survives our deleting it, while the rest of the batch goes."""
    wanted = endpoints(3)
    await registry.submit(wanted, [])
    taken = wanted[0].key
    await reader.put(taken, "another writer's value")  # no lease: not ours any more
    await registry.submit([], [e.key for e in wanted])
    kvs, _ = await reader.get_prefix("/services/")
    assert {kv.key: kv.value for kv in kvs} == {taken: "another writer's value"}


@pytest.mark.parametrize("outage", ["partition", "stop"])
async def test_writes_and_leases_move_off_a_failed_member(
    outage: str, etcd_cluster: EtcdCluster
) -> None:
    """A member cut off from its peers stays up (its client connection is fine) but has no
    leader: every write to it fails. A stopped one refuses connections. Either way the
    operator must go on through the other members."""
    failed, healthy, _ = etcd_cluster.members  # the first endpoint: a pick_first client's
    registry = Registry(
        Etcd(EtcdConfig(endpoints=tuple(etcd_cluster.endpoints), timeout=2)),
        Term.alone(),
        Setbacks(),
        owner=OWNER,
    )
    reader = Etcd(EtcdConfig(endpoints=(healthy.endpoint,), timeout=2))
    # Longer than TTL: renewals sent to the cut member are lost until it sees it has no
    # leader (about a second here), which a 2 s lease only just outlives on a busy machine.
    wanted = endpoints(40, ttl=FAILOVER_TTL)
    Desired(registry, wanted)
    await registry.start()
    try:
        await registry.submit(wanted[:20], [])
        if outage == "partition":
            etcd_cluster.partition(failed)
            await asyncio.to_thread(
                wait_for, lambda: not failed.healthy(), 10, message="the member lost its leader"
            )
        else:
            failed.stop()
        await asyncio.wait_for(registry.submit(wanted[20:], []), 10)
        for _ in range(int(2 * FAILOVER_TTL / 0.25)):  # renewed through the other members
            assert await on_live_leases(reader, wanted)(), f"keys lapsed after the {outage}"
            await asyncio.sleep(0.25)
    finally:
        await registry.close()
        await reader.close()
