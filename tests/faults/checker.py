"""The fault matrix's judge (issue #22): two histories on one monotonic clock, compared.

- `Want`: what the pods' readiness says a key should hold from a moment on (None: no
  ready pod stands for it), from a pod watch (tests/faults/recorders.py) or a test's script;
- `Seen`: what a consumer's etcd watch showed (value None: a DELETE; `prev`: its prevKV).

`check` reports, overall and per fault window: stale keys (present, no ready pod), missing
keys (a ready pod, no key), wrong values, resurrections (deleted, then back while its pod
never became ready again), DELETEs of ready pods' keys, the time to converge after the last
fault and the keys left behind at the end. `Report.violations` holds it to the bounds.
Pure and fast: the benchmark and the tests share it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# How far apart the two recorders may see one cause: a pod watch and the operator's both
# follow the API server, so a DELETE may land a moment before the readiness record says why.
SLACK = 0.5


@dataclass(frozen=True, slots=True)
class Want:
    at: float
    key: str
    value: str | None  # None: no ready pod stands for the key from `at` on


@dataclass(frozen=True, slots=True)
class Seen:
    at: float
    key: str
    value: str | None  # None: a DELETE
    prev: str | None = None  # the prevKV etcd sent with the event (None: none)


@dataclass(frozen=True, slots=True)
class Window:
    """A fault, from its start until it was undone. `expiry`: lease expiry is the designed
    outcome of this fault, so a consumer may see ready pods' keys deleted (and put back)."""

    name: str
    start: float
    end: float
    expiry: bool = False


@dataclass(frozen=True, slots=True)
class Span:
    key: str
    start: float
    end: float
    open: bool = False  # still so when the history ended

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Resurrection:
    key: str
    deleted: float
    back: float


@dataclass(slots=True)
class Findings:
    stale: list[Span] = field(default_factory=list)
    missing: list[Span] = field(default_factory=list)
    wrong: list[Span] = field(default_factory=list)
    resurrections: list[Resurrection] = field(default_factory=list)
    ready_deletes: list[Seen] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        """Counts and worst durations, for a table row."""
        return {
            "stale": len(self.stale),
            "stale_max_s": longest(self.stale),
            "missing": len(self.missing),
            "missing_max_s": longest(self.missing),
            "wrong": len(self.wrong),
            "wrong_max_s": longest(self.wrong),
            "resurrections": len(self.resurrections),
            "ready_deletes": len(self.ready_deletes),
            "ready_deleted_max_s": max(self.gone_for(), default=0.0),
        }

    def gone_for(self) -> list[float]:
        """How long each ready pod's key a consumer saw deleted stayed away."""
        starts = {(s.key, s.start): s.duration for s in self.missing}
        return [starts.get((e.key, e.at), 0.0) for e in self.ready_deletes]


@dataclass(slots=True)
class Report:
    overall: Findings
    windows: dict[str, Findings]
    converge: float | None  # seconds after the last fault; None: never converged
    left_behind: list[str]  # keys present at the end that no ready pod stands for
    inconsistent: list[Seen]  # events whose prevKV contradicts what the watch showed before

    def violations(self, windows: Sequence[Window], resync: float) -> list[str]:
        """Each bound broken, in a line: no stale, missing or wrong key for longer than its
        fault plus one `resync`; no resurrection; no DELETE of a ready pod's key outside
        an `expiry` window; converged within one `resync`; nothing left behind."""
        broken: list[str] = []
        for kind in ("stale", "missing", "wrong"):
            for span in getattr(self.overall, kind):
                bound = max((w.end - w.start for w in windows if near(w, span, resync)), default=0)
                if span.duration > bound + resync:
                    broken.append(
                        f"{kind} {span.key} for {span.duration:.2f}s > {bound + resync:.2f}s"
                    )
        broken += [
            f"resurrection of {r.key}: deleted at {r.deleted:.2f}, back at {r.back:.2f}"
            for r in self.overall.resurrections
        ]
        broken += [
            f"DELETE of ready pod's key {e.key} at {e.at:.2f}"
            for e in self.overall.ready_deletes
            if not any(w.expiry and w.start <= e.at <= w.end + resync for w in windows)
        ]
        if windows and (self.converge is None or self.converge > resync):
            broken.append(f"converged {self.converge} s after the last fault, bound {resync}s")
        broken += [f"left behind: {key}" for key in self.left_behind]
        broken += [f"watch gap at {e.key}: prevKV {e.prev!r}" for e in self.inconsistent]
        return broken


def longest(spans: Iterable[Span]) -> float:
    return max((s.duration for s in spans), default=0.0)


def near(window: Window, span: Span, resync: float) -> bool:
    """A span belongs to a fault it overlaps, or that ended at most one resync before it."""
    return span.start <= window.end + resync and span.end >= window.start


def check(
    want: Iterable[Want],
    seen: Iterable[Seen],
    windows: Sequence[Window] = (),
    *,
    end: float | None = None,
    resync: float = 0.0,
) -> Report:
    """Compare the histories up to `end` (default: the last event)."""
    wants: dict[str, list[Want]] = defaultdict(list)
    seens: dict[str, list[Seen]] = defaultdict(list)
    for w in sorted(want, key=lambda w: w.at):
        wants[w.key].append(w)
    for s in sorted(seen, key=lambda s: s.at):
        seens[s.key].append(s)
    last = max([0.0, *(h[-1].at for h in wants.values()), *(h[-1].at for h in seens.values())])
    end = last if end is None else end
    overall = Findings()
    inconsistent: list[Seen] = []
    for key in sorted(set(wants) | set(seens)):
        _compare(key, wants[key], seens[key], end, overall, inconsistent)
    return Report(
        overall,
        {w.name: _within(overall, w, resync) for w in windows},
        _converge(overall, windows),
        [s.key for s in overall.stale if s.open],
        inconsistent,
    )


def _value_at(history: Sequence[Want] | Sequence[Seen], t: float) -> str | None:
    """The value from the last event at or before `t` (events sorted by time)."""
    i = bisect_right(history, t, key=lambda e: e.at)
    return history[i - 1].value if i else None


def _compare(
    key: str,
    wants: list[Want],
    seens: list[Seen],
    end: float,
    out: Findings,
    inconsistent: list[Seen],
) -> None:
    # Sweep the merged changes: between two, both sides are constant.
    times = sorted({w.at for w in wants} | {s.at for s in seens})
    times = [t for t in times if t < end]
    state: str | None = None
    since = 0.0
    for t in times:
        now = _mismatch(_value_at(wants, t), _value_at(seens, t))
        if now != state:
            if state is not None:
                getattr(out, state).append(Span(key, since, t))
            state, since = now, t
    if state is not None:
        getattr(out, state).append(Span(key, since, end, open=True))

    before: str | None = None
    deleted_at: float | None = None
    for event in seens:
        if event.prev is not None and event.prev != before:
            inconsistent.append(event)
        if event.value is None:
            if _ready_throughout(wants, event.at - SLACK, event.at + SLACK):
                out.ready_deletes.append(event)
            deleted_at = event.at
        elif deleted_at is not None:
            ready_again = any(
                w.value is not None and deleted_at < w.at <= event.at + SLACK for w in wants
            )
            if _value_at(wants, event.at) is None and not ready_again:
                out.resurrections.append(Resurrection(key, deleted_at, event.at))
            deleted_at = None
        before = event.value


def _mismatch(wanted: str | None, shown: str | None) -> str | None:
    if wanted is None:
        return None if shown is None else "stale"
    if shown is None:
        return "missing"
    return None if shown == wanted else "wrong"


def _ready_throughout(wants: list[Want], start: float, stop: float) -> bool:
    if _value_at(wants, start) is None:
        return False
    return all(w.value is not None for w in wants if start < w.at <= stop)


def _within(overall: Findings, window: Window, resync: float) -> Findings:
    def hit(t: float) -> bool:
        return window.start <= t <= window.end + resync

    return Findings(
        [s for s in overall.stale if near(window, s, resync)],
        [s for s in overall.missing if near(window, s, resync)],
        [s for s in overall.wrong if near(window, s, resync)],
        [r for r in overall.resurrections if hit(r.back)],
        [e for e in overall.ready_deletes if hit(e.at)],
    )


def _converge(overall: Findings, windows: Sequence[Window]) -> float | None:
    """Seconds from the last fault's end until the mismatches it caused were gone; None
    while one is open. Caused: started before it ended, or as it ended (`SLACK`: etcd
    expires leases as it wakes); later ones are the churn's own, reported as spans."""
    if not windows:
        return 0.0
    last = max(w.end for w in windows)
    caused = [
        s for s in (*overall.stale, *overall.missing, *overall.wrong) if s.start <= last + SLACK
    ]
    if any(s.open for s in caused):
        return None
    return max([0.0, *(s.end - last for s in caused)])
