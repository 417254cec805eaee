"""The rate limit on Normal Events: a burst at once, then the rate."""

from __future__ import annotations

import pytest

from etcd_registrar.events import TokenBucket


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
