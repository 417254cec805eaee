"""Latency statistics and matching transitions to the etcd events they caused."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.watcher import KeyWatcher


@dataclass(frozen=True, slots=True)
class Sample:
    """One transition: the pod, the event it must cause, when the API server accepted it
    (response received), when the request was sent, and until when an event still counts."""

    pod: str
    expect: str  # "P" or "D"
    sent: float
    accepted: float
    until: float = math.inf


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary(seconds: Sequence[float]) -> dict[str, Any]:
    """count, p50/p90/p99/max and mean, in milliseconds."""
    if not seconds:
        return {"count": 0}
    ordered = sorted(seconds)
    ms = {f"p{int(q * 100)}": percentile(ordered, q) for q in (0.5, 0.9, 0.99)}
    ms |= {"max": ordered[-1], "mean": sum(ordered) / len(ordered)}
    return {"count": len(ordered)} | {k: round(v * 1000, 1) for k, v in ms.items()}


def latencies(samples: Sequence[Sample], watcher: KeyWatcher) -> tuple[list[float], int]:
    """Seconds from acceptance to the matching etcd event, and how many never got one."""
    found: list[float] = []
    missed = 0
    for s in samples:
        seen = watcher.first_after(s.pod, s.expect, s.sent)
        if seen is None or seen >= s.until:
            missed += 1
        else:
            found.append(seen - s.accepted)
    return found, missed


def bound_by_next(samples: list[Sample]) -> list[Sample]:
    """Each sample only counts events before the next transition of the same pod."""
    out: list[Sample] = []
    following: dict[str, float] = {}
    for s in sorted(samples, key=lambda s: s.sent, reverse=True):
        out.append(Sample(s.pod, s.expect, s.sent, s.accepted, following.get(s.pod, math.inf)))
        following[s.pod] = s.sent
    return sorted(out, key=lambda s: s.sent)
