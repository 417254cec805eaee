"""What a consumer of the registry sees: every PUT and DELETE under a prefix, timestamped.

The watching is done by `bench/probe watch` (Go): it stamps each etcd watch response with
CLOCK_MONOTONIC when it arrives, so neither this process' load nor the pipe delays the
timestamps. A thread here only reads its lines into per-key event lists.
"""

from __future__ import annotations

import asyncio
import bisect
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(slots=True)
class KeyEvents:
    times: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # "P" (put) or "D" (delete)


class KeyWatcher:
    """`with KeyWatcher(probe, endpoints, prefix) as w:` — live view of the prefix."""

    def __init__(self, probe: str, endpoints: str, prefix: str) -> None:
        self.prefix = prefix
        self._args = [probe, "watch", "-endpoints", endpoints, "-prefix", prefix]
        self._lock = threading.Lock()
        self._events: dict[str, KeyEvents] = defaultdict(KeyEvents)
        self._present: set[str] = set()
        self._last_change = 0.0
        self._ready = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def __enter__(self) -> KeyWatcher:
        self._proc = subprocess.Popen(
            self._args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self._thread = threading.Thread(target=self._read, daemon=True, name="key-watcher")
        self._thread.start()
        if not self._ready.wait(15):
            self.close()
            raise RuntimeError(f"probe watch did not start: {self.error}")
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
            kind, _, key = rest.partition(" ")
            stamp = int(head) / 1e9
            with self._lock:
                if kind == "D":
                    self._present.discard(key)
                else:  # "P", or "S" for a key present when the watch started
                    self._present.add(key)
                if kind != "S":
                    events = self._events[key]
                    events.times.append(stamp)
                    events.kinds.append(kind)
                self._last_change = stamp
        stderr = self._proc.stderr.read() if self._proc.stderr else ""
        self.error = stderr.strip() or "probe watch exited"

    # ----- queries (thread-safe)

    def count(self) -> int:
        with self._lock:
            return len(self._present)

    def last_change(self) -> float:
        with self._lock:
            return self._last_change

    def first_after(self, key: str, kind: str, after: float) -> float | None:
        """When `key` first saw an event of `kind` at or after `after` (monotonic), or None."""
        with self._lock:
            events = self._events.get(self.prefix + key)
            if events is None:
                return None
            start = bisect.bisect_left(events.times, after)
            for t, k in zip(events.times[start:], events.kinds[start:], strict=True):
                if k == kind:
                    return t
        return None

    def first_change_since(self, since: float) -> float | None:
        """The earliest event at or after `since` on any key."""
        with self._lock:
            firsts = [
                e.times[i]
                for e in self._events.values()
                if (i := bisect.bisect_left(e.times, since)) < len(e.times)
            ]
        return min(firsts, default=None)

    async def wait_count(self, n: int, limit: float) -> float:
        """Wait up to `limit` s until exactly `n` keys are present; return when the last
        change arrived. Raises TimeoutError with the count seen."""
        deadline = time.monotonic() + limit
        while self.count() != n:
            if self.error is not None:
                raise RuntimeError(f"key watcher failed: {self.error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.prefix}: {self.count()} keys, expected {n}")
            await asyncio.sleep(0.02)
        return self.last_change()
