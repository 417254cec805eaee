"""Pacing (pacing.py): the rate limits, and the fair queue that lets every namespace take
its turn however much another has queued (docs/annotations.md#events). No sleeps: a clock that
the test moves."""

from __future__ import annotations

import asyncio

import pytest

from etcd_registrar.pacing import FairQueue, PacedQueue, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 64.0  # binary fractions below add up exactly

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("rate", "burst", "steps", "expected"),
    [
        # (seconds to advance before each take) -> taken?
        (10.0, 3, [0, 0, 0, 0], [True, True, True, False]),
        (8.0, 1, [0, 0, 0.125, 0.0625, 0.0625], [True, False, True, False, True]),
        (1.0, 2, [0, 0, 0, 100, 0, 0], [True, True, False, True, True, False]),  # capped at burst
    ],
)
def test_take(rate: float, burst: int, steps: list[float], expected: list[bool]) -> None:
    clock = Clock()
    bucket = TokenBucket(rate, burst, clock)
    taken = []
    for advance in steps:
        clock.now += advance
        taken.append(bucket.take())
    assert taken == expected


def flood(tenant: str, n: int) -> list[tuple[str, str, int]]:
    """`n` puts of `tenant`: (tenant, key, priority)."""
    return [(tenant, f"{tenant}{i}", 0) for i in range(n)]


@pytest.mark.parametrize(
    ("puts", "expected"),
    [
        pytest.param(flood("b", 3), ["b0", "b1", "b2"], id="one-tenant-in-order"),
        pytest.param(
            [*flood("b", 1000), ("a", "a0", 0)],
            ["b0", "a0", "b1", "b2"],
            id="a-flood-delays-another-tenant-by-one-turn",
        ),
        pytest.param(
            [*flood("b", 3), *flood("c", 2), ("a", "a0", 0)],
            ["b0", "c0", "a0", "b1", "c1", "b2"],
            id="round-robin-of-three",
        ),
        pytest.param(
            [("b", "b0", 1), ("b", "b1", 1), ("a", "a0", 0), ("b", "b2", 0)],
            ["a0", "b2", "b0", "b1"],
            id="lower-priority-number-first",
        ),
        pytest.param(
            [("b", "b0", 0), ("b", "b1", 0), ("b", "b0", 1)],
            ["b1", "b0"],
            id="put-again-replaces-and-moves",
        ),
    ],
)
def test_fair_queue_order(puts: list[tuple[str, str, int]], expected: list[str]) -> None:
    queue: FairQueue[str, str] = FairQueue(priorities=2)
    for tenant, key, priority in puts:
        assert queue.put(tenant, key, key.upper(), priority)
    taken = [queue.take() for _ in expected]
    assert [key for key, _ in taken] == expected
    assert all(item == key.upper() for key, item in taken)


def test_a_tenant_queues_at_most_its_share() -> None:
    queue: FairQueue[str, int] = FairQueue(per_tenant=2)
    assert [queue.put("b", f"b{i}", i) for i in range(4)] == [True, True, False, False]
    assert queue.put("a", "a0", 0)  # another tenant has its own share
    assert queue.put("b", "b1", 10)  # queued already: replaced, not refused
    assert len(queue) == 3 and "b2" not in queue
    queue.take()
    assert queue.put("b", "b2", 2)  # room again once one is taken


def test_discard_and_membership() -> None:
    queue: FairQueue[str, int] = FairQueue(priorities=2)
    queue.put("a", "x", 1, priority=1)
    queue.put("b", "y", 2)
    queue.discard("x")
    queue.discard("absent")
    assert set(queue) == {"y"} and "x" not in queue and len(queue) == 1
    assert queue.take() == ("y", 2)
    assert not queue


async def test_paced_queue_waits_for_an_item_and_a_token() -> None:
    clock = Clock()
    queue: PacedQueue[str, int] = PacedQueue(TokenBucket(64.0, 1, clock))
    waiting = asyncio.ensure_future(queue.next())
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing queued
    queue.put("a", "a0", 0)
    assert await waiting == ("a0", 0)
    queue.put("a", "a1", 1)
    paced = asyncio.ensure_future(queue.next())
    await asyncio.sleep(0)
    assert not paced.done()  # the bucket is empty until the clock moves
    clock.now += 1 / 64
    assert await asyncio.wait_for(paced, 5) == ("a1", 1)
