"""What the benchmark sees happen, timestamped by `bench/probe` (Go):

- `KeyWatcher`: every PUT and DELETE under a registry prefix, as a consumer sees them;
- `PodWatcher`: every pod change the API server publishes to its watchers, as the
  controllers under test receive it.

The probe stamps each watch response with CLOCK_MONOTONIC when it arrives, so neither this
process' load nor the pipe delays the timestamps; a thread here only reads its lines into
per-name event lists.
"""

from __future__ import annotations

import asyncio
import bisect
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

ADDS, REMOVES = {"P", "S"}, {"D", "X"}  # kinds that make a name present / absent


@dataclass(slots=True)
class Events:
    times: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


class ProbeStream:
    """Runs a probe subcommand whose lines are "<monotonic ns> <kind> <name>" after a first
    "ready ..." line; `with` starts it and waits for that line."""

    def __init__(self, args: list[str], prefix: str = "") -> None:
        self.prefix = prefix
        self._args = args
        self._lock = threading.Lock()
        self._events: dict[str, Events] = defaultdict(Events)
        self._present: set[str] = set()
        self._last_change = 0.0
        self._ready = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self.error: str | None = None

    def __enter__(self) -> ProbeStream:
        self._proc = subprocess.Popen(
            self._args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        threading.Thread(target=self._read, daemon=True, name="probe-reader").start()
        if not self._ready.wait(30):
            self.close()
            raise RuntimeError(f"{' '.join(self._args[:2])} did not start: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(5)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            head, _, rest = line.rstrip("\n").partition(" ")
            if head == "ready":
                self._ready.set()
                continue
            kind, _, name = rest.partition(" ")
            stamp = int(head) / 1e9
            with self._lock:
                if kind in ADDS:
                    self._present.add(name)
                elif kind in REMOVES:
                    self._present.discard(name)
                if kind != "S":  # "S": present when the watch started, not an event
                    events = self._events[name]
                    events.times.append(stamp)
                    events.kinds.append(kind)
                self._last_change = stamp
        stderr = self._proc.stderr.read() if self._proc.stderr else ""
        self.error = stderr.strip() or "probe exited"

    # ----- queries (thread-safe)

    def count(self) -> int:
        with self._lock:
            return len(self._present)

    def last_change(self) -> float:
        with self._lock:
            return self._last_change

    def first_after(self, name: str, kind: str, after: float) -> float | None:
        """When `name` (without the prefix) first had an event of `kind` at or after `after`."""
        with self._lock:
            events = self._events.get(self.prefix + name)
            if events is None:
                return None
            start = bisect.bisect_left(events.times, after)
            for t, k in zip(events.times[start:], events.kinds[start:], strict=True):
                if k == kind:
                    return t
        return None

    def first_change_since(self, since: float) -> float | None:
        """The earliest event at or after `since` on any name."""
        with self._lock:
            firsts = [
                e.times[i]
                for e in self._events.values()
                if (i := bisect.bisect_left(e.times, since)) < len(e.times)
            ]
        return min(firsts, default=None)

    def names_since(self, kind: str, since: float) -> list[str]:
        """Names (without the prefix) with an event of `kind` at or after `since`, once per
        event."""
        with self._lock:
            return [
                name.removeprefix(self.prefix)
                for name, e in self._events.items()
                for t, k in zip(e.times, e.kinds, strict=True)
                if k == kind and t >= since
            ]

    async def wait_count(self, n: int, limit: float) -> float:
        """Wait up to `limit` s until exactly `n` names are present; return when the last
        change arrived. Raises TimeoutError with the count seen."""
        deadline = time.monotonic() + limit
        while self.count() != n:
            if self.error is not None:
                raise RuntimeError(f"probe failed: {self.error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.prefix or 'pods'}: {self.count()} present, not {n}")
            await asyncio.sleep(0.02)
        return self.last_change()


def key_watcher(probe: str, endpoints: str, prefix: str) -> ProbeStream:
    """Keys under `prefix`: kinds P (put) and D (delete); names are keys minus the prefix."""
    return ProbeStream([probe, "watch", "-endpoints", endpoints, "-prefix", prefix], prefix)


def pod_watcher(probe: str, kubeconfig: str, namespace: str) -> ProbeStream:
    """Pods of a namespace: kinds R (serving), U (not), T (terminating), X (deleted)."""
    return ProbeStream([probe, "pods", "-kubeconfig", kubeconfig, "-namespace", namespace])
