"""The registry on the in-memory etcd (verified by tests/etcd_contract.py): its guards,
fence, lease loss and standby, table-driven and without an etcd process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from etcd_registrar.etcd import Fence
from etcd_registrar.memory import MemoryEtcd
from etcd_registrar.registry import Registry
from etcd_registrar.term import Term
from tests.listeners import Setbacks, setbacks
from tests.unit.builders import endpoint

GOODS = [endpoint(f"/services/goods/goods-{n}", pod=f"goods-{n}") for n in range(3)]


@pytest.fixture
def etcd() -> MemoryEtcd:
    return MemoryEtcd()


@pytest.fixture
async def registry(etcd: MemoryEtcd) -> AsyncIterator[Registry]:
    registry = Registry(etcd, Term.alone(), Setbacks(), owner="t")
    await registry.start()
    yield registry
    await registry.close()


async def values(etcd: MemoryEtcd) -> dict[str, str]:
    return {kv.key: kv.value for kv in (await etcd.get_prefix("/services/"))[0]}


@pytest.mark.parametrize(
    ("before", "puts", "deletes", "after", "taken"),
    [
        ({}, GOODS[:2], [], {e.key: e.value for e in GOODS[:2]}, []),
        # another writer's key is neither overwritten nor deleted
        ({GOODS[0].key: "theirs"}, GOODS[:1], [], {GOODS[0].key: "theirs"}, [{GOODS[0].key}]),
        ({GOODS[0].key: "theirs"}, [], [GOODS[0].key], {GOODS[0].key: "theirs"}, []),
    ],
    ids=["puts", "a-taken-key-is-not-overwritten", "a-foreign-key-is-not-deleted"],
)
async def test_guarded_writes(
    registry: Registry,
    etcd: MemoryEtcd,
    before: dict[str, str],
    puts: list[object],
    deletes: list[str],
    after: dict[str, str],
    taken: list[set[str]],
) -> None:
    for key, value in before.items():
        await etcd.put(key, value)
    await registry.submit(puts, deletes)  # type: ignore[arg-type]
    assert await values(etcd) == after
    assert setbacks(registry).taken == taken


async def test_a_put_then_delete_deletes_only_our_key(registry: Registry, etcd: MemoryEtcd) -> None:
    await registry.submit(GOODS, [])
    lease = registry.held[GOODS[0].key].lease
    await etcd.put(GOODS[1].key, "taken over")  # another writer, behind our back
    await registry.submit([], [GOODS[0].key, GOODS[1].key])
    assert await values(etcd) == {GOODS[1].key: "taken over", GOODS[2].key: GOODS[2].value}
    assert GOODS[2].key in (await etcd.time_to_live(lease)).keys


async def test_a_fenced_write_ends_the_term_and_applies_nothing(etcd: MemoryEtcd) -> None:
    lease = await etcd.grant(30)
    _, holder = await etcd.campaign("/etcd-registrar/t/leader", "old", lease)
    assert holder is not None
    term = Term()
    term.begin(Fence(holder.key, holder.create_revision))
    registry = Registry(etcd, term, Setbacks(), owner="t")
    await registry.start()
    try:
        await registry.submit(GOODS[:1], [])
        await etcd.revoke(lease)  # deposed while it believed it led
        await registry.submit(GOODS[1:], [GOODS[0].key])
        assert not term.leading and "refused" in term.reason
        assert await values(etcd) == {GOODS[0].key: GOODS[0].value}
        # a standby writes nothing, and queues nothing for later
        await registry.submit(GOODS[1:], [])
        assert await values(etcd) == {GOODS[0].key: GOODS[0].value} and registry.idle
    finally:
        await registry.close()


async def test_a_lost_lease_is_told_with_its_keys(registry: Registry, etcd: MemoryEtcd) -> None:
    await registry.submit(GOODS, [])
    lease = registry.held[GOODS[0].key].lease
    await etcd.revoke(lease)
    await registry.refresh_view([e.key for e in GOODS])
    assert setbacks(registry).lost == [{e.key for e in GOODS}]
    assert registry.held == {}


async def test_a_successor_adopts_the_leases_and_keys(etcd: MemoryEtcd) -> None:
    first = Registry(etcd, Term.alone(), Setbacks(), owner="t")
    await first.start()
    await first.submit(GOODS, [])
    await first.close()
    successor = Registry(etcd, Term.alone(), Setbacks(), owner="t")
    await successor.start()
    try:
        assert {k: h.lease for k, h in successor.held.items()} == {
            k: h.lease for k, h in first.held.items()
        }
        await successor.submit(GOODS, [])  # written again on the lease it adopted
        lease = successor.held[GOODS[0].key].lease
        kv = (await etcd.get_many([GOODS[0].key]))[GOODS[0].key]
        assert kv.lease == lease and len(etcd.leases) == 1  # no lease granted anew
    finally:
        await successor.close()
