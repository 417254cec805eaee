"""The benchmark's accounting of missed transitions (bench/stats.py misses)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.stats import Sample, Transition, accept, misses, timed_latencies
from bench.watcher import ProbeStream


class Keys(ProbeStream):
    """The etcd events a probe saw: {pod: [(time, kind)]}, no probe process."""

    def __init__(self, events: dict[str, list[tuple[float, str]]]) -> None:
        super().__init__([])
        self.events = events

    def first_after(self, name: str, kind: str, after: float) -> float | None:
        return next((t for t, k in self.events.get(name, []) if k == kind and t >= after), None)


# Pod "a" turns unready at 1.0 and ready again at 2.0 (when there is a next transition).
@pytest.mark.parametrize(
    ("a_events", "back", "expected"),
    [
        ([(2.3, "P")], 2.0, {"missed": 1, "superseded": 1, "late": 0, "lost": 0}),
        ([(2.1, "D"), (2.3, "P")], 2.0, {"missed": 1, "superseded": 0, "late": 1, "lost": 0}),
        ([], 2.0, {"missed": 1, "superseded": 0, "late": 0, "lost": 1}),  # nor the next one
        ([], None, {"missed": 1, "superseded": 0, "late": 0, "lost": 1}),  # stayed unready
        ([(1.2, "D"), (2.3, "P")], 2.0, {"missed": 0, "superseded": 0, "late": 0, "lost": 0}),
    ],
)
def test_a_miss_is_superseded_only_when_no_event_came_and_the_next_state_reached_etcd(
    a_events: list[tuple[float, str]], back: float | None, expected: dict[str, Any]
) -> None:
    samples = [Sample("a", "D", 1.0, 1.0, back if back is not None else math.inf)]
    if back is not None:
        samples.append(Sample("a", "P", back, back))
    found = misses(samples, Keys({"a": a_events}), "D")
    assert {k: found[k] for k in expected} == expected
    if expected["superseded"]:
        assert found["superseded_lifetime_ms"]["max"] == 1000.0


def test_an_event_that_comes_before_the_next_transition_is_accepted_is_not_missed() -> None:
    """Under load the API server takes a second to answer: the pod's next change was sent
    (1.2) before this one's DELETE reached etcd (1.6) but accepted only at 2.4."""
    transitions = [Transition("a", "D", "U", 1.0, 1.5), Transition("a", "P", "R", 1.2, 2.4)]
    samples, _ = accept(transitions, Keys({}))
    keys = Keys({"a": [(1.6, "D"), (2.5, "P")]})
    found, missed = timed_latencies(samples, keys)
    assert missed == 0
    assert [round(seconds, 3) for _, seconds in found] == [0.1, 0.1]
