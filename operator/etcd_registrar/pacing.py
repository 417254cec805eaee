"""Pacing: how fast requests to the API server go out, and in which order across tenants.

One tenant's volume must not cost another tenant its turn (docs/annotations.md#events): work waits
in a `FairQueue`, which hands it out round-robin across namespaces, and goes out as fast as
a `TokenBucket` allows. No I/O: the callers make the requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TokenBucket:
    """At most `rate` takes per second on average, `burst` at once."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.stamp = float(burst), clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class FairQueue(Generic[K, V]):
    """Items by key, taken lowest priority number first and, within a priority, round-robin
    across tenants: a tenant with a thousand items queued waits its turn like one with one.

    Putting a key again replaces its item and moves it to the back of its tenant's line (the
    newest wins). A tenant holds at most `per_tenant` items per priority: more are refused,
    so one tenant's flood costs memory in proportion to its share only.
    """

    def __init__(self, priorities: int = 1, per_tenant: int | None = None) -> None:
        self.per_tenant = per_tenant
        # priority -> tenant -> key -> item; the tenants in the order of their next turn
        self._lines: list[dict[str, dict[K, V]]] = [{} for _ in range(priorities)]
        self._where: dict[K, tuple[int, str]] = {}

    def put(self, tenant: str, key: K, item: V, priority: int = 0) -> bool:
        """Queue `item` under `key`; False: `tenant` has its fill queued, `item` is not."""
        self.discard(key)
        lines = self._lines[priority]
        line = lines.setdefault(tenant, {})
        if self.per_tenant is not None and len(line) >= self.per_tenant:
            return False
        line[key] = item
        self._where[key] = (priority, tenant)
        return True

    def take(self) -> tuple[K, V]:
        """The next key and item (the queue must not be empty)."""
        lines = next(lines for lines in self._lines if lines)
        tenant, line = next(iter(lines.items()))
        key = next(iter(line))
        item = line.pop(key)
        del self._where[key], lines[tenant]
        if line:
            lines[tenant] = line  # to the back of the round
        return key, item

    def discard(self, key: K) -> None:
        where = self._where.pop(key, None)
        if where is not None:
            priority, tenant = where
            line = self._lines[priority][tenant]
            del line[key]
            if not line:
                del self._lines[priority][tenant]

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __iter__(self) -> Iterator[K]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


class PacedQueue(FairQueue[K, V]):
    """A `FairQueue` emptied no faster than `bucket` allows."""

    def __init__(
        self, bucket: TokenBucket, priorities: int = 1, per_tenant: int | None = None
    ) -> None:
        super().__init__(priorities, per_tenant)
        self.bucket = bucket
        self._wakeup = asyncio.Event()

    def put(self, tenant: str, key: K, item: V, priority: int = 0) -> bool:
        self._wakeup.set()
        return super().put(tenant, key, item, priority)

    async def next(self, allowed: Callable[[], bool] = lambda: True) -> tuple[K, V]:
        """The next key and item, once there is one, `allowed()` holds and the rate allows."""
        while True:
            if not self:
                self._wakeup.clear()
                await self._wakeup.wait()
            elif not allowed():
                await asyncio.sleep(1.0)
            elif self.bucket.take():
                return self.take()
            else:
                await asyncio.sleep(1 / self.bucket.rate)
