"""Registry: what the operator holds in etcd, on which leases, and how writes reach etcd.

- Writes are coalesced per key (pending work is the latest desired state, never a queue that
  grows with events) and committed in transactions of at most 128 operations, one at a time:
  while one is in flight the next batch gathers (group commit, no artificial delay).
- Leases are pooled per (namespace, service, TTL), at most `keys_per_lease` keys each, all kept
  alive over one stream at TTL/3. A lost lease is replaced and its keys re-written.
- Ownership: every lease is recorded under ``/etcd-registrar/<owner>/leases/<id>``, attached
  to the lease itself, so a restarted operator adopts its predecessor's leases instead of
  letting the registry empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from etcd_registrar import metrics
from etcd_registrar.etcd import (
    MAX_TXN_OPS,
    DeleteOp,
    Etcd,
    EtcdError,
    KeepAliveStream,
    LeaseNotFound,
    Op,
    PutOp,
)
from etcd_registrar.plan import Current, Pool, pool_of
from etcd_registrar.source import Endpoint

logger = logging.getLogger(__name__)

VIEW_SLICE = 1000  # keys re-read per step of a sweep, with pod events let in between
EMPTY_LEASE_GRACE = 60.0  # keep an empty lease this long: a flapping pod must not churn leases


@dataclass(slots=True)
class Lease:
    id: int
    pool: Pool
    keys: set[str] = field(default_factory=set)
    next_refresh: float = 0.0
    empty_since: float | None = None


@dataclass(frozen=True, slots=True)
class Held:
    value: str
    lease: int
    pool: Pool
    pod: str = ""  # the pod it was written for ("" if adopted from a predecessor, for logs)


@dataclass(frozen=True, slots=True)
class Write:
    """The latest desired state of one key: a value on a pool's lease, or None to delete."""

    key: str
    value: str | None
    pool: Pool | None
    seen: float | None  # when the pod change behind it was seen (latency metric), if one was
    pod: str = ""  # for logs


class Backoff:
    """Exponential backoff with full jitter, so many operators never retry in lockstep."""

    def __init__(self, base: float = 0.2, cap: float = 5.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    async def sleep(self) -> None:
        delay = random.uniform(0, min(self.cap, self.base * 2**self.attempt))  # noqa: S311
        self.attempt += 1
        await asyncio.sleep(delay)

    def reset(self) -> None:
        self.attempt = 0


class Registry:
    def __init__(
        self,
        etcd: Etcd,
        *,
        owner: str = "default",
        dry_run: bool = False,
        keys_per_lease: int = 1000,
        on_lease_lost: Callable[[set[str]], None] = lambda keys: None,
    ) -> None:
        self.etcd = etcd
        self.owner_prefix = f"/etcd-registrar/{owner}/leases/"
        self.dry_run = dry_run
        self.keys_per_lease = keys_per_lease
        self.on_lease_lost = on_lease_lost
        self.held: dict[str, Held] = {}
        self._leases: dict[int, Lease] = {}
        self._pending: dict[str, Write] = {}
        self._inflight: dict[str, Write] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._committed_during_read: set[str] | None = None
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._fake_lease_ids = iter(range(-1, -(2**62), -1))  # dry-run leases

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the leases a previous run of this owner left, then start the loops."""
        backoff = Backoff()
        while True:
            try:
                await self._adopt()
                break
            except EtcdError as exc:
                logger.warning("etcd not reachable yet (%s); retrying", exc)
                await backoff.sleep()
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="etcd-writer"),
            asyncio.create_task(self._keepalive_loop(), name="lease-keepalive"),
        ]

    async def close(self) -> None:
        """Stop without revoking: keys outlive a restart by up to one TTL, or get adopted."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.etcd.close()

    async def _adopt(self) -> None:
        records, _ = await self.etcd.get_prefix(self.owner_prefix)
        now = time.monotonic()
        for record in records:
            try:
                pool_data = json.loads(record.value)
                pool: Pool = (pool_data["namespace"], pool_data["service"], int(pool_data["ttl"]))
            except (ValueError, KeyError, TypeError):
                continue
            ttl, keys = await self.etcd.time_to_live(record.lease)
            if ttl <= 0:
                continue
            keys = [k for k in keys if k != record.key]
            self._leases[record.lease] = Lease(record.lease, pool, set(keys), now)
        owned = {k for lease in self._leases.values() for k in lease.keys}
        for key, kv in (await self.etcd.get_many(owned)).items():
            if (lease := self._leases.get(kv.lease)) is not None:
                self.held[key] = Held(kv.value, kv.lease, lease.pool)
        for lease in self._leases.values():
            lease.keys &= self.held.keys()
            lease.empty_since = None if lease.keys else now
        metrics.leases.set(len(self._leases))
        if self._leases:
            logger.info("adopted %d leases holding %d keys", len(self._leases), len(self.held))

    # --- the view the planner reads ---------------------------------------------------------

    def current(self, key: str) -> Current | None:
        """The key as it will be once queued writes land (what plans must diff against)."""
        write = self._pending.get(key) or self._inflight.get(key)
        if write is not None:
            return None if write.value is None else Current(write.value, write.pool)
        held = self.held.get(key)
        return None if held is None else Current(held.value, held.pool)

    def current_many(self, keys: Iterable[str]) -> dict[str, Current]:
        return {k: c for k in keys if (c := self.current(k)) is not None}

    @property
    def idle(self) -> bool:
        return not self._pending and not self._inflight

    # --- writes -----------------------------------------------------------------------------

    def submit(
        self, puts: Iterable[Endpoint], deletes: Iterable[str], seen: float | None = None
    ) -> asyncio.Future[None]:
        """Queue the latest state of these keys; the future resolves once all are in etcd."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        keys: list[str] = []
        for endpoint in puts:
            self._pending[endpoint.key] = Write(
                endpoint.key, endpoint.value, pool_of(endpoint), seen, endpoint.pod_name
            )
            keys.append(endpoint.key)
        for key in deletes:
            was = self._pending.get(key) or self._inflight.get(key) or self.held.get(key)
            pool, pod = (was.pool, was.pod) if was else (None, "")
            self._pending[key] = Write(key, None, pool, seen, pod)
            keys.append(key)
        if not keys:
            future.set_result(None)
            return future
        counter = _Countdown(future, len(keys))
        for key in keys:
            self._waiters.setdefault(key, []).append(counter.future_for_key())
        self._wakeup.set()
        return future

    async def _write_loop(self) -> None:
        backoff = Backoff(cap=2.0)
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._take_batch()
                try:
                    ops = [await self._op_for(write) for write in batch]
                    revision = await self._commit(ops)
                except LeaseNotFound:
                    await self._drop_dead_leases()
                    self._requeue(batch)
                    continue
                except EtcdError as exc:
                    self._requeue(batch) if exc.retryable else self._fail(batch, exc)
                    if exc.retryable:
                        logger.warning("etcd write failed, will retry: %s", exc)
                        await backoff.sleep()
                    continue
                backoff.reset()
                self._applied(batch, ops, revision)

    def _take_batch(self) -> list[Write]:
        """Up to 128 writes, or 127 once one is a delete: a guarded delete is a nested
        transaction, and etcd allows a nested one only the ops the outer one leaves over."""
        batch: list[Write] = []
        guarded = False
        for key in list(itertools.islice(self._pending, MAX_TXN_OPS)):
            write = self._pending[key]
            guarded = guarded or write.value is None
            if len(batch) >= MAX_TXN_OPS - int(guarded):
                break
            del self._pending[key]
            self._inflight[key] = write
            batch.append(write)
        return batch

    def _requeue(self, batch: list[Write]) -> None:
        for write in batch:
            del self._inflight[write.key]
            self._pending.setdefault(write.key, write)  # a newer write for the key wins

    def _fail(self, batch: list[Write], exc: EtcdError) -> None:
        for write in batch:
            logger.error(
                "etcd refused the write of key %s for pod %s: %s",
                write.key,
                _pod(write),
                exc,
                extra=_fields(write),
            )
            del self._inflight[write.key]
            self._resolve(write.key)

    async def _commit(self, ops: list[Op]) -> int:
        if self.dry_run:
            return 0  # _applied logs each write as "dry-run: would ..."
        revision = await self.etcd.txn(ops)
        metrics.txn_ops.observe(len(ops))
        return revision

    def _applied(self, batch: list[Write], ops: list[Op], revision: int) -> None:
        now = time.monotonic()
        for write, op in zip(batch, ops, strict=True):
            del self._inflight[write.key]
            old = self.held.pop(write.key, None)
            if old is not None and (previous := self._leases.get(old.lease)) is not None:
                previous.keys.discard(write.key)
                if not previous.keys:
                    previous.empty_since = now
            if isinstance(op, PutOp) and write.pool is not None and write.value is not None:
                self.held[write.key] = Held(write.value, op.lease, write.pool, write.pod)
                if (lease := self._leases.get(op.lease)) is not None:
                    lease.keys.add(write.key)
                    lease.empty_since = None
            if self._committed_during_read is not None:
                self._committed_during_read.add(write.key)
            if write.seen is not None:
                metrics.propagation.observe(now - write.seen)
            self._log_applied(write, op, revision)
            self._resolve(write.key)

    def _log_applied(self, write: Write, op: Op, revision: int) -> None:
        """One line per key written, naming pod, namespace, service and key (text and JSON)."""
        verb = "dry-run: would " if self.dry_run else ""
        verb += "put" if isinstance(op, PutOp) else "delete"
        extra = _fields(write) | {"revision": revision, "dry_run": self.dry_run}
        if isinstance(op, PutOp):
            extra["lease"] = f"{op.lease:x}"
        logger.info("%s %s for pod %s", verb, _describe(op), _pod(write), extra=extra)

    def _resolve(self, key: str) -> None:
        if key in self._pending:
            return  # a newer write for this key is still to come
        for future in self._waiters.pop(key, []):
            if not future.done():
                future.set_result(None)

    # --- leases -----------------------------------------------------------------------------

    async def _op_for(self, write: Write) -> Op:
        held = self.held.get(write.key)
        if write.value is None or write.pool is None:
            return DeleteOp(write.key, held.lease if held is not None else 0)
        if held is not None and held.pool == write.pool and held.lease in self._leases:
            return PutOp(write.key, write.value, held.lease)
        return PutOp(write.key, write.value, await self._lease_with_room(write.pool, write.key))

    async def _lease_with_room(self, pool: Pool, key: str) -> int:
        """A lease of `pool` for `key`; the key takes its slot now so a batch cannot overfill."""
        candidates = [lease for lease in self._leases.values() if lease.pool == pool]
        for lease in candidates:
            if key in lease.keys:
                return lease.id
        for lease in candidates:
            if len(lease.keys) < self.keys_per_lease:
                lease.keys.add(key)
                lease.empty_since = None
                return lease.id
        lease_id = await self._grant(pool)
        self._leases[lease_id].keys.add(key)
        return lease_id

    async def _grant(self, pool: Pool) -> int:
        namespace, service, ttl = pool
        if self.dry_run:
            lease_id = next(self._fake_lease_ids)
        else:
            lease_id = await self.etcd.grant(ttl)
            record = json.dumps({"namespace": namespace, "service": service, "ttl": ttl})
            await self.etcd.put(f"{self.owner_prefix}{lease_id:x}", record, lease_id)
        self._leases[lease_id] = Lease(lease_id, pool, set(), time.monotonic() + ttl / 3)
        metrics.leases.set(len(self._leases))
        logger.info("granted lease %x (ttl %ds) for %s/%s", lease_id, ttl, namespace, service)
        return lease_id

    async def _drop_dead_leases(self) -> None:
        for lease in list(self._leases.values()):
            ttl, _ = await self.etcd.time_to_live(lease.id)
            if ttl <= 0:
                self._lost(lease.id)

    def _lost(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return
        metrics.lease_regrants.inc()
        metrics.leases.set(len(self._leases))
        keys = {
            k for k in lease.keys if (h := self.held.get(k)) is not None and h.lease == lease_id
        }
        for key in keys:
            del self.held[key]
        logger.warning(
            "lease %x of %s/%s lost; re-writing its %d keys", lease_id, *lease.pool[:2], len(keys)
        )
        self.on_lease_lost(keys)

    async def _keepalive_loop(self) -> None:
        # Reconnect fast: after an etcd restart, leases are re-armed with just their TTL.
        backoff = Backoff(base=0.05, cap=1.0)
        while True:
            stream: KeepAliveStream | None = None
            reader: asyncio.Task[None] | None = None
            try:
                stream = self.etcd.keepalive_stream()
                reader = asyncio.create_task(self._read_acks(stream))
                await self._send_refreshes(stream, reader, backoff)
            except EtcdError as exc:
                metrics.keepalive_failures.inc()
                logger.warning("lease keepalive stream broke: %s", exc)
                await backoff.sleep()
            finally:
                if reader is not None:
                    reader.cancel()
                if stream is not None:
                    stream.close()

    async def _send_refreshes(
        self, stream: KeepAliveStream, reader: asyncio.Task[None], backoff: Backoff
    ) -> None:
        while not reader.done():
            now = time.monotonic()
            for lease in list(self._leases.values()):
                if lease.empty_since is not None and now - lease.empty_since > EMPTY_LEASE_GRACE:
                    await self._retire(lease)
                elif lease.id > 0 and not self.dry_run and lease.next_refresh <= now:
                    await stream.send(lease.id)
                    lease.next_refresh = now + lease.pool[2] / 3
            await asyncio.wait({reader}, timeout=0.2)
        reader.result()  # re-raise what broke the stream

    async def _read_acks(self, stream: KeepAliveStream) -> None:
        while True:
            lease_id, ttl = await stream.receive()
            if ttl <= 0:
                self._lost(lease_id)

    async def _retire(self, lease: Lease) -> None:
        if lease.keys:
            lease.empty_since = None
            return
        del self._leases[lease.id]
        metrics.leases.set(len(self._leases))
        if lease.id > 0 and not self.dry_run:
            with contextlib.suppress(EtcdError):
                await self.etcd.revoke(lease.id)

    # --- sweep support ----------------------------------------------------------------------

    async def refresh_view(self, keys: Iterable[str]) -> None:
        """Re-read `keys` and every key on our leases from etcd, and trust what it says.

        Keys written while the read ran are left alone: the write is newer than the read.
        In a dry run the simulated view stands (etcd never gets what it holds).
        """
        if self.dry_run:
            return
        committed: set[str] = set()
        self._committed_during_read = committed
        try:
            owned: set[str] = set()
            for lease in list(self._leases.values()):
                if lease.id < 0:
                    continue
                ttl, attached = await self.etcd.time_to_live(lease.id)
                if ttl <= 0:
                    self._lost(lease.id)
                    continue
                owned.update(attached)
            wanted = {
                k
                for k in set(keys) | owned | self.held.keys()
                if not k.startswith(self.owner_prefix)
            }
            actual = await self.etcd.get_many(wanted)
            for n, key in enumerate(wanted):
                if n % VIEW_SLICE == VIEW_SLICE - 1:
                    await asyncio.sleep(0)  # let pod events in between slices
                if key in committed or key in self._pending or key in self._inflight:
                    continue  # written since the read: newer than what it returned
                kv = actual.get(key)
                owner = self._leases.get(kv.lease) if kv is not None else None
                if kv is not None and owner is not None:
                    known = self.held.get(key)
                    self.held[key] = Held(
                        kv.value, kv.lease, owner.pool, known.pod if known else ""
                    )
                    owner.keys.add(key)
                else:
                    self.held.pop(key, None)  # gone, or taken over by another writer
        finally:
            self._committed_during_read = None


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


def _describe(op: Op) -> str:
    if isinstance(op, PutOp):
        return f"{op.key}={op.value!r} (lease {op.lease:x})"
    return op.key


def _pod(write: Write) -> str:
    namespace, service = write.pool[:2] if write.pool else ("?", "?")
    return f"{namespace}/{write.pod or '?'} (service {service})"


def _fields(write: Write) -> dict[str, object]:
    """Structured fields of a log line about a key (JSON logs carry them as such)."""
    namespace, service = write.pool[:2] if write.pool else (None, None)
    return {"key": write.key, "namespace": namespace, "service": service, "pod": write.pod or None}
