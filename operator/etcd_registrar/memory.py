"""An etcd in the process: the `EtcdPort` for fast tests, verified against real etcd.

It keeps what the operator relies on (tests/etcd_contract.py runs the same tests against it
and against etcd 3.4 and 3.6): one revision per transaction that changes something, create
and mod revisions, guarded ops each on their own, the fence compare on a create revision,
leases with TTLs and their keys, prefix reads, and watches from a revision. Time is
`clock` (seconds): a test that injects its own expires leases without waiting (a lease
whose TTL ran out ends at the next call, as etcd's leader ends it on its own). `down` makes
every call fail as an unreachable etcd does.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from etcd_registrar.etcd import (
    ABSENT,
    KV,
    MAX_TXN_OPS,
    DeleteOp,
    EtcdUnavailable,
    Fence,
    Fenced,
    KeepAliveStream,
    LeaseInfo,
    LeaseNotFound,
    Op,
    PutOp,
    TxnResult,
    WatchEvent,
)


@dataclass(slots=True)
class _Lease:
    granted: int
    expires: float
    keys: set[str] = field(default_factory=set)


class MemoryEtcd:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.down = False
        self.revision = 1  # etcd starts at 1
        self.kvs: dict[str, KV] = {}
        self.leases: dict[int, _Lease] = {}
        self.history: list[WatchEvent] = []
        self._next_lease = 0x1000
        self._changed = asyncio.Event()  # set, and replaced, at every change

    # --- the port ---------------------------------------------------------------------------

    async def close(self) -> None:
        pass

    async def ping(self, key: str) -> None:
        self._serve()

    async def txn(self, ops: Sequence[Op], fence: Fence | None = None) -> TxnResult:
        self._serve()
        if len(ops) > MAX_TXN_OPS:
            raise ValueError(f"a transaction holds at most {MAX_TXN_OPS} operations")
        if fence is not None and not self._holds(fence):
            raise Fenced(f"{fence.key} is no longer ours (created at revision {fence.revision})")
        refused = {n: self.kvs.get(op.key) for n, op in enumerate(ops) if not self._guard(op)}
        applied = [op for n, op in enumerate(ops) if n not in refused]
        if any(self._unleased(op) for op in applied):  # etcd refuses the whole transaction
            raise LeaseNotFound("etcdserver: requested lease not found")
        if any(isinstance(op, PutOp) or op.key in self.kvs for op in applied):
            self.revision += 1
            for op in applied:
                self._put(op) if isinstance(op, PutOp) else self._delete(op.key)
            self._notify()
        return TxnResult(self.revision, refused)

    async def get_prefix(self, prefix: str, *, keys_only: bool = False) -> tuple[list[KV], int]:
        self._serve()
        found = [kv for key, kv in sorted(self.kvs.items()) if key.startswith(prefix)]
        if keys_only:
            found = [KV(kv.key, "", kv.lease, kv.mod_revision, kv.create_revision) for kv in found]
        return found, self.revision

    async def get_many(self, keys: Iterable[str]) -> dict[str, KV]:
        self._serve()
        return {key: kv for key in keys if (kv := self.kvs.get(key)) is not None}

    async def put(self, key: str, value: str, lease: int = 0, fence: Fence | None = None) -> int:
        return (await self.txn([PutOp(key, value, lease)], fence)).revision

    async def campaign(self, key: str, value: str, lease: int) -> tuple[bool, KV | None]:
        result = await self.txn([PutOp(key, value, lease, ABSENT)])
        return 0 not in result.refused, self.kvs.get(key)

    async def resign(self, fence: Fence) -> None:
        await self.txn([DeleteOp(fence.key)], fence)

    async def grant(self, ttl: int) -> int:
        self._serve()
        self._next_lease += 1
        self.leases[self._next_lease] = _Lease(ttl, self.clock() + ttl)
        return self._next_lease

    async def revoke(self, lease: int) -> None:
        self._serve()
        if lease not in self.leases:
            raise LeaseNotFound("etcdserver: requested lease not found")
        self._end(lease)

    async def time_to_live(self, lease: int) -> LeaseInfo:
        self._serve()
        held = self.leases.get(lease)
        if held is None:
            return LeaseInfo(-1, 0, [])
        left = max(0, math.floor(held.expires - self.clock()))
        return LeaseInfo(left, held.granted, sorted(held.keys))

    async def keepalive_stream(self) -> KeepAliveStream:
        self._serve()
        return _Keepalives(self)

    async def watch_prefix(
        self, prefix: str, start_revision: int
    ) -> AsyncGenerator[WatchEvent, None]:
        self._serve()
        seen = 0
        while True:
            changed = self._changed  # taken first: a change while we yield is not missed
            while seen < len(self.history):
                event, seen = self.history[seen], seen + 1
                if event.revision >= start_revision and event.key.startswith(prefix):
                    yield event
            await changed.wait()

    # --- time -------------------------------------------------------------------------------

    def _expire(self) -> None:
        for lease_id, lease in list(self.leases.items()):
            if lease.expires <= self.clock():
                self._end(lease_id)

    def _refresh(self, lease: int) -> int:
        held = self.leases.get(lease)
        if held is None or held.expires <= self.clock():
            return 0
        held.expires = self.clock() + held.granted
        return held.granted

    # --- inside -----------------------------------------------------------------------------

    def _serve(self) -> None:
        if self.down:
            raise EtcdUnavailable("UNAVAILABLE: the in-memory etcd is down")
        self._expire()

    def _guard(self, op: Op) -> bool:
        """Whether `op` applies: unguarded, or its key is absent / on the lease it names."""
        found = self.kvs.get(op.key)
        expect = op.expect_lease if isinstance(op, PutOp) else (op.lease or None)
        if expect is None:
            return True
        if expect == ABSENT:
            return found is None
        return found is not None and found.lease == expect

    def _unleased(self, op: Op) -> bool:
        """A put on a lease etcd does not have."""
        return isinstance(op, PutOp) and bool(op.lease) and op.lease not in self.leases

    def _holds(self, fence: Fence) -> bool:
        kv = self.kvs.get(fence.key)
        return kv is not None and kv.create_revision == fence.revision

    def _put(self, op: PutOp) -> None:
        old = self.kvs.get(op.key)
        if old is not None and old.lease in self.leases:
            self.leases[old.lease].keys.discard(op.key)
        created = old.create_revision if old is not None else self.revision
        self.kvs[op.key] = KV(op.key, op.value, op.lease, self.revision, created)
        if op.lease:
            self.leases[op.lease].keys.add(op.key)
        self.history.append(WatchEvent("PUT", op.key, op.value, self.revision))

    def _delete(self, key: str) -> None:
        old = self.kvs.pop(key, None)
        if old is None:
            return
        if old.lease in self.leases:
            self.leases[old.lease].keys.discard(key)
        self.history.append(WatchEvent("DELETE", key, "", self.revision))

    def _end(self, lease: int) -> None:
        keys = self.leases.pop(lease).keys
        if keys:
            self.revision += 1
            for key in sorted(keys):
                self._delete(key)
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class _Keepalives(KeepAliveStream):
    """Keepalives answered in the process: the TTL granted, or 0 for a lease gone."""

    def __init__(self, etcd: MemoryEtcd) -> None:  # no call: nothing goes out
        self._etcd = etcd
        self._answers: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    async def send(self, lease: int) -> None:
        self._etcd._serve()
        self._answers.put_nowait((lease, self._etcd._refresh(lease)))

    async def receive(self) -> tuple[int, int]:
        return await self._answers.get()

    def close(self) -> None:
        pass
