"""Latency statistics, and matching each transition to the watch events it caused.

When did the API server accept a change? Both the response to our request and the pod
watch event the probe receives come after the commit; the earlier of the two is the
tightest bound we have, and that is the start of every latency here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.watcher import ProbeStream


@dataclass(frozen=True, slots=True)
class Transition:
    """What the benchmark did to one pod: the etcd event it must cause ("P" put, "D"
    delete), the pod state watchers must see ("R", "U", "T"), request sent and answered."""

    pod: str
    expect: str
    state: str
    sent: float
    done: float


@dataclass(frozen=True, slots=True)
class Sample:
    """A transition with its acceptance time, and until when an etcd event still counts
    (the pod's next transition)."""

    pod: str
    expect: str
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


def accept(transitions: Sequence[Transition], pods: ProbeStream) -> tuple[list[Sample], Any]:
    """Samples with acceptance = min(response received, pod watch event seen), and the
    summary of (watch event - response) over the transitions that had both. An event still
    counts for a transition until the pod's next transition was accepted: until it was
    sent, it cut events off that came while the API server had not yet taken it (under
    load its requests take up to a second), and counted them as missed."""
    samples: list[Sample] = []
    skew: list[float] = []
    following: dict[str, float] = {}
    for t in sorted(transitions, key=lambda t: t.sent, reverse=True):
        until = following.get(t.pod, math.inf)
        watched = pods.first_after(t.pod, t.state, t.sent)
        accepted = t.done
        if watched is not None and watched < until:
            skew.append(watched - t.done)
            accepted = min(accepted, watched)
        samples.append(Sample(t.pod, t.expect, t.sent, accepted, until))
        following[t.pod] = accepted
    samples.reverse()
    return samples, summary(skew)


def timed_latencies(
    samples: Sequence[Sample], keys: ProbeStream
) -> tuple[list[tuple[float, float]], int]:
    """(acceptance, seconds from acceptance to the matching etcd event) per sample that got
    its event, and how many never did."""
    found: list[tuple[float, float]] = []
    missed = 0
    for s in samples:
        seen = keys.first_after(s.pod, s.expect, s.sent)
        if seen is None or seen >= s.until:
            missed += 1
        else:
            found.append((s.accepted, seen - s.accepted))
    return found, missed


def latencies(samples: Sequence[Sample], keys: ProbeStream) -> tuple[list[float], int]:
    """Seconds from acceptance to the matching etcd event, and how many never got one."""
    found, missed = timed_latencies(samples, keys)
    return [seconds for _, seconds in found], missed


def gate_samples(transitions: Sequence[Transition], pods: ProbeStream) -> list[Sample]:
    """For gated pods, the transitions that readied a pod, accepted when ContainersReady
    turned True (pod state "C"), each to be followed by the pod turning Ready by the
    kubelet's rule ("R"): timed_latencies() of these against the pod stream is the time the
    readiness gate adds."""
    as_gated = [
        Transition(t.pod, "R", "C", t.sent, t.done) if t.expect == "P" else t for t in transitions
    ]
    samples, _ = accept(as_gated, pods)
    return [s for s in samples if s.expect == "R"]


def watched_gate_latencies(samples: Sequence[Sample], pods: ProbeStream) -> list[float]:
    """Seconds from a pod watcher seeing ContainersReady True to it seeing the gate True: the
    gate's time without the API server's lag in publishing the first change (which the
    operator's own pod watch waits for too)."""
    found: list[float] = []
    for s in samples:
        containers = pods.first_after(s.pod, "C", s.sent)
        ready = pods.first_after(s.pod, "R", containers) if containers is not None else None
        if containers is not None and ready is not None and ready < s.until:
            found.append(ready - containers)
    return found


def slowest(found: Sequence[tuple[float, float]], start: float, k: int = 10) -> list[list[float]]:
    """The k slowest as [seconds into the run, latency ms]: clustered offsets point at a
    stall (a sweep, a collection, a full queue), spread ones at general overload."""
    worst = sorted(found, key=lambda f: f[1], reverse=True)[:k]
    return [[round(at - start, 2), round(1000 * seconds, 1)] for at, seconds in sorted(worst)]


def misses(samples: Sequence[Sample], keys: ProbeStream, expect: str) -> dict[str, Any]:
    """Each missed transition of kind `expect` (of all the pods' `samples`), told apart by
    the key's own history in etcd:

    - superseded: no event for it at all, and the pod's next transition did reach etcd. The
      write queue keeps only a key's latest state; the pod left the state before the
      operator wrote it, so no consumer could act on it, and etcd went on to the state
      that replaced it. Its latency is at least its lifetime (from its acceptance to that
      of the next transition), which the latency figures, censored by the miss, leave out.
    - late: its event arrived, after the pod had changed again: a consumer saw it late.
    - lost: neither: the pod's state never reached etcd (a defect).
    """
    following: dict[Sample, Sample] = {}
    last: dict[str, Sample] = {}
    for s in sorted(samples, key=lambda s: s.sent, reverse=True):
        if s.pod in last:
            following[s] = last[s.pod]
        last[s.pod] = s

    def arrived(s: Sample) -> float | None:
        seen = keys.first_after(s.pod, s.expect, s.sent)
        return seen if seen is not None and seen < s.until else None

    def late(s: Sample) -> float | None:  # before the pod's next transition of its kind
        seen = keys.first_after(s.pod, s.expect, s.sent)
        after = following.get(s)
        again = following.get(after) if after is not None else None
        bound = again.sent if again is not None else math.inf
        return seen if seen is not None and seen < bound else None

    counts = {"missed": 0, "superseded": 0, "late": 0, "lost": 0}
    lifetimes: list[float] = []
    detail: list[dict[str, Any]] = []
    for s in samples:
        if s.expect != expect or arrived(s) is not None:
            continue
        counts["missed"] += 1
        after = following.get(s)
        seen = late(s)
        if seen is not None:
            kind = "late"
        elif after is not None and arrived(after) is not None:
            kind = "superseded"
            lifetimes.append(after.accepted - s.accepted)
        else:
            kind = "lost"
        counts[kind] += 1
        detail.append(
            {
                "pod": s.pod,
                "kind": kind,
                "lifetime_ms": round(1000 * (after.accepted - s.accepted), 1) if after else None,
                "event_after_ms": round(1000 * (seen - s.accepted), 1) if seen else None,
            }
        )
    return counts | {"superseded_lifetime_ms": summary(lifetimes), "detail": detail[:50]}
