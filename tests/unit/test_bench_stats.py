"""The benchmark's accounting of missed transitions (bench/stats.py misses)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.stats import Sample, misses
from bench.watcher import ProbeStream


class Keys(ProbeStream):
    """The etcd events a probe saw: {pod: [(time, kind)]}, no probe process."""

    def __init__(self, events: dict[str, list[tuple[float, str]]]) -> None:
        super().__init__([])
        self.events = events

    def first_after(self, name: str, kind: str, after: float) -> float | None:
        return next((t for t, k in self.events.get(name, []) if k == kind and t >= after), None)


# Pod "a" turns unready at 1.0 (accepted 1.0) and ready again at `back`; pod "b" changes at
# 1.1 and its DELETE arrives 0.3 s later: the operator's latency then.
@pytest.mark.parametrize(
    ("back", "a_events", "expected"),
    [
        (1.05, [], {"missed": 1, "superseded": 1, "lost": 0}),  # left again in 50 ms < 300
        (2.00, [], {"missed": 1, "superseded": 0, "lost": 1}),  # lived 1 s and never arrived
        (2.00, [(1.2, "D")], {"missed": 0, "superseded": 0, "lost": 0}),  # arrived
        (math.inf, [], {"missed": 1, "superseded": 0, "lost": 1}),  # never superseded
    ],
)
def test_a_miss_is_superseded_only_when_its_state_lived_less_than_the_latency_then(
    back: float, a_events: list[tuple[float, str]], expected: dict[str, Any]
) -> None:
    samples = [Sample("a", "D", 1.0, 1.0, back), Sample("b", "D", 1.1, 1.1)]
    if back != math.inf:
        samples.append(Sample("a", "P", back, back))
    keys = Keys({"a": [*a_events, (back + 0.3, "P")], "b": [(1.4, "D")]})
    found = misses(samples, keys, "D")
    assert {k: found[k] for k in expected} == expected
