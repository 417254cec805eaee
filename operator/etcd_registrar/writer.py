"""The write queue: the latest desired state of each key, committed in batches (group commit).

Writes are coalesced per key: pending work is the latest desired state, never a queue that
grows with events. Batches of at most 127 writes are committed one at a time; while one is in
flight the next gathers, with no artificial delay. What a batch means in etcd is the
registry's business: the queue only hands batches to its `commit` callable.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from etcd_registrar.etcd import MAX_TXN_OPS
from etcd_registrar.source import Pool
from etcd_registrar.supervisor import Backoff

BATCH_OPS = MAX_TXN_OPS - 1  # see WriteQueue.take_batch


@dataclass(frozen=True, slots=True)
class Write:
    """The latest desired state of one key: a value on a pool's lease, or None to delete."""

    key: str
    value: str | None
    pool: Pool | None
    seen: float | None  # when the pod change behind it was seen (latency metric), if one was
    pod: str = ""  # for logs


class WriteQueue:
    """Pending and in-flight writes by key, and who waits for them.

    `commit(batch)` writes a batch and returns True when etcd is unavailable (the loop backs
    off); every write of the batch must leave flight by `requeue` or `landed` + `resolve`.
    `drained` is set exactly while nothing is pending or in flight."""

    def __init__(self, commit: Callable[[list[Write]], Awaitable[bool]]) -> None:
        self.commit = commit
        self._pending: dict[str, Write] = {}
        self._inflight: dict[str, Write] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._wakeup = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()

    def latest(self, key: str) -> Write | None:
        """The newest write of `key` not yet resolved: pending, else in flight."""
        return self._pending.get(key) or self._inflight.get(key)

    def submit(self, writes: Iterable[Write]) -> asyncio.Future[None]:
        """Queue `writes` (each replaces a pending one of its key); the future resolves once
        all are resolved."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        keys: list[str] = []
        for write in writes:
            self._pending[write.key] = write
            keys.append(write.key)
        if not keys:
            future.set_result(None)
            return future
        counter = _Countdown(future, len(keys))
        for key in keys:
            self._waiters.setdefault(key, []).append(counter.future_for_key())
        self.drained.clear()
        self._wakeup.set()
        return future

    async def run(self) -> None:
        backoff = Backoff(cap=2.0)
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                if await self.commit(self.take_batch()):
                    await backoff.sleep()
                else:
                    backoff.reset()

    def take_batch(self) -> list[Write]:
        """Up to 127 writes: each is a guarded (nested) transaction, and etcd allows a nested
        one only the ops the outer one leaves over, so 128 would leave it none."""
        batch = [self._pending[key] for key in itertools.islice(self._pending, BATCH_OPS)]
        for write in batch:
            del self._pending[write.key]
            self._inflight[write.key] = write
        return batch

    def requeue(self, batch: Iterable[Write]) -> None:
        for write in batch:
            del self._inflight[write.key]
            self._pending.setdefault(write.key, write)  # a newer write for the key wins
        self._wakeup.set()

    def landed(self, write: Write) -> None:
        """`write` left flight (resolve its key once its effects are in the view)."""
        del self._inflight[write.key]

    def drop_pending(self) -> None:
        """Forget every pending write (another replica makes them now)."""
        for key in list(self._pending):
            del self._pending[key]
            self.resolve(key)

    def resolve(self, key: str) -> None:
        """Wake who waits for `key`, unless a newer write for it is still to come."""
        if self._pending or self._inflight:
            self.drained.clear()
        else:
            self.drained.set()
        if key in self._pending:
            return
        for future in self._waiters.pop(key, []):
            if not future.done():
                future.set_result(None)


class _Countdown:
    """Resolves one future after `n` per-key futures have resolved."""

    def __init__(self, future: asyncio.Future[None], n: int) -> None:
        self.future, self.remaining = future, n

    def future_for_key(self) -> asyncio.Future[None]:
        part: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        part.add_done_callback(self._one_done)
        return part

    def _one_done(self, _: asyncio.Future[None]) -> None:
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(None)
