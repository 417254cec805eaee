"""The write queue (writer.py), without etcd: coalescing per key, requeue, batches of at most
127, the `drained` event and the waiters' futures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from etcd_registrar.etcd import Etcd, EtcdConfig
from etcd_registrar.registry import Registry
from etcd_registrar.source import Endpoint, Pool
from etcd_registrar.term import Term
from etcd_registrar.writer import BATCH_OPS, Write, WriteQueue
from tests.listeners import Setbacks
from tests.unit.builders import endpoint

A, B = "/services/goods/a", "/services/goods/b"
POOL = Pool("shop", "goods", 10)
PUT_A = endpoint(A, pod="goods-a")
PUT_A2 = endpoint(A, pod="goods-a", value="10.0.0.9:8080")
PUT_B = endpoint(B, pod="goods-b")


async def idle_commit(batch: list[Write]) -> bool:
    raise AssertionError("the loop is not started in these tests")


def put(e: Endpoint) -> Write:
    return Write(e.key, e.value, POOL, None, e.pod_name)


def delete(key: str, pod: str = "", pool: Pool | None = POOL) -> Write:
    return Write(key, None, pool, None, pod)


Submits = list[tuple[list[Endpoint], list[str]]]


@pytest.mark.parametrize(
    ("submits", "pending"),
    [
        pytest.param([([PUT_A], [])], {A: put(PUT_A)}, id="put"),
        pytest.param([([PUT_A], []), ([PUT_A2], [])], {A: put(PUT_A2)}, id="newer-put-wins"),
        pytest.param(
            [([PUT_A], []), ([], [A])], {A: delete(A, "goods-a")}, id="put-then-delete-is-one"
        ),
        pytest.param([([], [A])], {A: delete(A, pool=None)}, id="delete-of-a-key-never-ours"),
        pytest.param(
            [([PUT_A, PUT_B], []), ([], [A])],
            {A: delete(A, "goods-a"), B: put(PUT_B)},
            id="other-keys-stay",
        ),
        pytest.param([([], [A]), ([PUT_A], [])], {A: put(PUT_A)}, id="delete-then-put-is-one"),
    ],
)
async def test_writes_in_one_tick_coalesce_per_key(
    submits: Submits, pending: dict[str, Write]
) -> None:
    """Pending work is the latest desired state per key, never a queue of events; a delete
    keeps the pool and pod of the put it replaces (for its log line)."""
    registry = Registry(
        Etcd(EtcdConfig()), Term.alone(), Setbacks()
    )  # never started: nothing reaches etcd
    for puts, deletes in submits:
        registry.submit(puts, deletes)
    assert {w.key: w for w in registry.writes.take_batch()} == pending
    assert registry.writes.take_batch() == []


async def test_a_newer_write_for_a_key_in_flight_wins_on_requeue() -> None:
    queue = WriteQueue(idle_commit)
    queue.submit([put(PUT_A), put(PUT_B)])
    in_flight = queue.take_batch()
    queue.submit([put(PUT_A2)])  # while the first batch is in flight
    assert queue.latest(A) == put(PUT_A2)  # what plans diff against: the newest
    queue.requeue(in_flight)  # e.g. etcd was unavailable
    assert {w.key: w for w in queue.take_batch()} == {A: put(PUT_A2), B: put(PUT_B)}


async def test_batches_hold_at_most_127_writes() -> None:
    queue = WriteQueue(idle_commit)
    queue.submit(put(endpoint(f"/services/goods/{i}")) for i in range(300))
    sizes = [len(queue.take_batch()) for _ in range(4)]
    assert BATCH_OPS == 127 and sizes == [127, 127, 46, 0]


def land(queue: WriteQueue, key: str) -> None:
    """What the registry does with a write etcd applied."""
    queue.landed(queue.latest(key))  # type: ignore[arg-type]
    queue.resolve(key)


Step = Callable[[WriteQueue], object]


@pytest.mark.parametrize(
    ("steps", "drained"),
    [
        pytest.param([], True, id="new"),
        pytest.param([lambda q: q.submit([])], True, id="nothing-submitted"),
        pytest.param([lambda q: q.submit([put(PUT_A)])], False, id="pending"),
        pytest.param(
            [lambda q: q.submit([put(PUT_A)]), WriteQueue.take_batch], False, id="in-flight"
        ),
        pytest.param(
            [lambda q: q.submit([put(PUT_A)]), WriteQueue.take_batch, lambda q: land(q, A)],
            True,
            id="landed",
        ),
        pytest.param(
            [
                lambda q: q.submit([put(PUT_A), put(PUT_B)]),
                WriteQueue.take_batch,
                lambda q: land(q, A),
            ],
            False,
            id="one-of-two-landed",
        ),
        pytest.param(
            [
                lambda q: q.submit([put(PUT_A)]),
                WriteQueue.take_batch,
                lambda q: q.submit([put(PUT_A2)]),
                lambda q: land(q, A),
            ],
            False,
            id="landed-with-a-newer-write-pending",
        ),
        pytest.param(
            [lambda q: q.submit([put(PUT_A)]), lambda q: q.requeue(q.take_batch())],
            False,
            id="requeued",
        ),
        pytest.param(
            [lambda q: q.submit([put(PUT_A), put(PUT_B)]), WriteQueue.drop_pending],
            True,
            id="pending-dropped",
        ),
        pytest.param(
            [
                lambda q: q.submit([put(PUT_A)]),
                WriteQueue.take_batch,
                lambda q: q.submit([put(PUT_B)]),
                WriteQueue.drop_pending,
            ],
            False,
            id="dropped-but-one-in-flight",
        ),
    ],
)
async def test_drained_is_set_exactly_while_nothing_is_pending_or_in_flight(
    steps: list[Step], drained: bool
) -> None:
    queue = WriteQueue(idle_commit)
    for step in steps:
        step(queue)
    assert queue.drained.is_set() is drained


async def test_a_submit_resolves_once_each_of_its_keys_has_its_latest_write_in() -> None:
    queue = WriteQueue(idle_commit)
    first = queue.submit([put(PUT_A), put(PUT_B)])
    queue.take_batch()
    second = queue.submit([put(PUT_A2)])
    land(queue, B)
    land(queue, A)  # the older write of A: a newer one is still pending
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    queue.take_batch()
    land(queue, A)
    await asyncio.sleep(0)
    assert first.done() and second.done()


async def test_the_loop_commits_every_pending_write_in_batches() -> None:
    batches: list[int] = []

    async def commit(batch: list[Write]) -> bool:
        batches.append(len(batch))
        for write in batch:
            land(queue, write.key)
        return False

    queue = WriteQueue(commit)
    task = asyncio.create_task(queue.run())
    try:
        done = queue.submit(put(endpoint(f"/services/goods/{i}")) for i in range(200))
        await asyncio.wait_for(done, 5)
        await asyncio.wait_for(queue.drained.wait(), 1)
        assert batches == [127, 73]
    finally:
        task.cancel()
