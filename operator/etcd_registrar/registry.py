"""Registry: which keys the operator holds in etcd, on which leases, and the writes that
change them.

- The view: `held` (ours, on our leases) and `foreign` (another writer's), which plans diff
  against; re-read from etcd by each sweep (`refresh_view`).
- Writes come from the write queue (writer.py) in batches; each becomes a guarded op (put only
  where the key is absent or ours, delete only while it is ours), and a batch one transaction,
  fenced by the leader key when replicas elect a leader.
- Leases come from the lease pool (leases.py); a restarted operator adopts its predecessor's
  leases instead of letting the registry empty.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from etcd_registrar import metrics
from etcd_registrar.etcd import (
    ABSENT,
    KV,
    DeleteOp,
    EtcdError,
    Fenced,
    LeaseNotFound,
    Op,
    PutOp,
    TxnResult,
)
from etcd_registrar.leases import Lease, LeasePool
from etcd_registrar.plan import Current
from etcd_registrar.port import EtcdPort
from etcd_registrar.source import Endpoint, Pool, pool_of
from etcd_registrar.supervisor import Backoff, Loop
from etcd_registrar.term import Term
from etcd_registrar.writer import Write, WriteQueue

logger = logging.getLogger(__name__)

VIEW_SLICE = 1000  # keys re-read per step of a sweep, with pod events let in between


class Setbacks(Protocol):
    """Who hears of the keys the registry could not keep or write (the controller re-plans
    them and tells their pods)."""

    def lease_lost(self, keys: set[str]) -> None:
        """`keys` went with a lease etcd no longer has."""

    def found_taken(self, keys: set[str]) -> None:
        """Another writer holds `keys`: not overwritten."""

    def write_refused(self, write: Write, reason: str) -> None:
        """etcd refused `write`."""


@dataclass(frozen=True, slots=True)
class Held:
    value: str
    lease: int
    pool: Pool
    pod: str = ""  # the pod it was written for ("" if adopted from a predecessor, for logs)


class Registry:
    def __init__(
        self,
        etcd: EtcdPort,
        term: Term,
        setbacks: Setbacks,
        *,
        owner: str = "default",
        keys_per_lease: int = 1000,
        cluster: str = "",
    ) -> None:
        self.etcd, self.term = etcd, term  # only the leader writes, fenced by its term
        self.setbacks = setbacks
        self.held: dict[str, Held] = {}
        self.foreign: dict[str, str] = {}  # key -> value another writer holds there
        self.leases = LeasePool(
            etcd,
            owner,
            keys_per_lease=keys_per_lease,
            term=term,
            on_lost=self._lease_lost,
            cluster=cluster,
        )
        self.owner_prefix = self.leases.prefix
        self.writes = WriteQueue(self._write)
        self._committed_during_read: set[str] | None = None
        self.loops: list[Loop] = []

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
        self.loops = [
            Loop("etcd-writer", self.writes.run).start(),
            Loop("lease-keepalive", self.leases.keepalive_loop).start(),
        ]

    async def close(self) -> None:
        """Stop without revoking: keys outlive a restart by up to one TTL, or get adopted."""
        for loop in self.loops:
            await loop.stop()
        await self.etcd.close()

    async def take_over(self) -> None:
        """Before this replica's term begins: read what etcd holds after the election, the
        leases recorded now (another leader may have granted or retired some since this
        registry last read), and the keys on them."""
        self.held.clear()
        self.foreign.clear()
        await self._adopt()

    async def follow(self) -> None:
        """Standby: keep alive every lease the leader recorded, so no key lapses while any
        replica lives."""
        await self.leases.follow()

    async def _adopt(self) -> None:
        await self.leases.adopt()
        for key, kv in (await self.etcd.get_many(self.leases.owned())).items():
            if (lease := self.leases.by_id.get(kv.lease)) is not None:
                self.held[key] = Held(kv.value, kv.lease, lease.pool)
        self.leases.keep(self.held.keys())
        if self.leases.by_id:
            logger.info("adopted %d leases holding %d keys", len(self.leases.by_id), len(self.held))

    # --- the view the planner reads ---------------------------------------------------------

    def current(self, key: str) -> Current | None:
        """The key as it will be once queued writes land (what plans must diff against);
        pool None: another writer holds it."""
        write = self.writes.latest(key)
        if write is not None:
            return None if write.value is None else Current(write.value, write.pool)
        held = self.held.get(key)
        if held is not None:
            return Current(held.value, held.pool)
        foreign = self.foreign.get(key)
        return None if foreign is None else Current(foreign, None)

    def current_many(self, keys: Iterable[str]) -> dict[str, Current]:
        return {k: c for k in keys if (c := self.current(k)) is not None}

    @property
    def idle(self) -> bool:
        return self.writes.drained.is_set()

    # --- writes -----------------------------------------------------------------------------

    def submit(
        self, puts: Iterable[Endpoint], deletes: Iterable[str], seen: float | None = None
    ) -> asyncio.Future[None]:
        """Queue the latest state of these keys; the future resolves once all are in etcd."""
        writes = [Write(e.key, e.value, pool_of(e), seen, e.pod_name) for e in puts]
        for key in deletes:
            was = self.writes.latest(key) or self.held.get(key)
            pool, pod = (was.pool, was.pod) if was else (None, "")
            writes.append(Write(key, None, pool, seen, pod))
        return self.writes.submit(writes)

    async def _write(self, batch: list[Write]) -> bool:
        """Commit `batch`; True when etcd is unavailable and the writer should back off.

        A batch etcd refuses as a whole is split until the refused write stands alone: one
        bad key (a prefix the etcd role may not write, an oversized value) fails only itself,
        never the 127 batched with it."""
        if not self.term.leading:  # another replica leads: queued writes are its to make
            self.writes.requeue(batch)
            self.writes.drop_pending()
            return False
        error: Exception
        try:
            ops = [await self._op_for(write) for write in batch]
            result = await self._commit([op for op in ops if op is not None])
        except LeaseNotFound:
            self._requeue(batch)
            await self.leases.drop_dead()
            return False
        except Fenced as exc:  # another replica leads: its writes, not ours, are the truth
            metrics.fenced_writes.inc()
            self._requeue(batch)
            self.writes.drop_pending()
            self.term.end(f"etcd refused a write: {exc}")
            return False
        except EtcdError as exc:
            if exc.retryable:
                logger.warning("etcd write failed, will retry: %s", exc)
                self._requeue(batch)
                return True
            error = exc
        except Exception as exc:  # a request the client cannot build: never end the writer
            logger.exception("etcd write of %d keys failed", len(batch))
            error = exc
        else:
            self._applied(batch, ops, result)
            return False
        if len(batch) == 1:
            self._refuse(batch[0], f"etcd refused the write: {error}")
            return False
        half = len(batch) // 2
        retry_first = await self._write(batch[:half])
        return await self._write(batch[half:]) or retry_first

    async def _op_for(self, write: Write) -> Op | None:
        """The guarded op for `write`; None for a delete of a key that is not ours."""
        held = self.held.get(write.key)
        if write.value is None or write.pool is None:
            return None if held is None else DeleteOp(write.key, held.lease)
        expect = ABSENT if held is None else held.lease
        if held is not None and held.pool == write.pool and held.lease in self.leases.by_id:
            return PutOp(write.key, write.value, held.lease, expect)
        lease = await self.leases.with_room(write.pool, write.key)
        return PutOp(write.key, write.value, lease, expect)

    async def _commit(self, ops: list[Op]) -> TxnResult:
        if not ops:
            return TxnResult(0, {})
        result = await self.etcd.txn(ops, self.term.fence())
        metrics.txn_ops.observe(len(ops))
        return result

    def _requeue(self, batch: list[Write]) -> None:
        for write in batch:
            self._unreserve(write)
        self.writes.requeue(batch)

    def _release(self, write: Write) -> None:
        """`write` leaves flight without landing: its key gives up a lease slot it reserved
        but never used."""
        self.writes.landed(write)
        self._unreserve(write)

    def _unreserve(self, write: Write) -> None:
        held = self.held.get(write.key)
        self.leases.unreserve(write.key, held.lease if held is not None else None)

    def _refuse(self, write: Write, reason: str) -> None:
        metrics.writes_refused.labels("refused").inc()
        logger.error(
            "key %s for pod %s not written: %s",
            write.key,
            _pod(write),
            reason,
            extra=_fields(write),
        )
        self._release(write)
        self.writes.resolve(write.key)
        self.setbacks.write_refused(write, reason)

    def _applied(self, batch: list[Write], ops: list[Op | None], result: TxnResult) -> None:
        now = time.monotonic()
        sent = itertools.count()
        taken: set[str] = set()
        for write, op in zip(batch, ops, strict=True):
            index = next(sent) if op is not None else -1
            if index in result.refused:
                self._guard_failed(write, op, result.refused[index], taken)
                continue
            self.writes.landed(write)
            old = self.held.pop(write.key, None)
            if old is not None:
                self.leases.free(old.lease, write.key)
            if isinstance(op, PutOp) and write.pool is not None and write.value is not None:
                self.foreign.pop(write.key, None)
                if self.leases.take(op.lease, write.key):
                    self.held[write.key] = Held(write.value, op.lease, write.pool, write.pod)
                else:  # the lease was lost while the put was in flight: the key goes with it
                    self.setbacks.lease_lost({write.key})
            if self._committed_during_read is not None:
                self._committed_during_read.add(write.key)
            if write.seen is not None:
                metrics.propagation.observe(now - write.seen)
            if op is not None:
                self._log_applied(write, op, result)
            self.writes.resolve(write.key)
        if taken:
            self.setbacks.found_taken(taken)

    def _guard_failed(self, write: Write, op: Op | None, found: KV | None, taken: set[str]) -> None:
        """The key is not what our view said: learn who holds it, then write again only if
        that is us or no one."""
        self._forget(write.key)
        owner = self.leases.by_id.get(found.lease) if found is not None else None
        if found is not None and owner is not None:
            self.held[write.key] = Held(found.value, found.lease, owner.pool)
        if found is None or owner is not None:
            if isinstance(op, PutOp):
                self._requeue([write])  # ours or free: the put goes again, guarded anew
                return
        else:
            self.foreign[write.key] = found.value
            if isinstance(op, PutOp):
                metrics.writes_refused.labels("taken").inc()
                logger.warning(
                    "key %s for pod %s not written: another writer holds it",
                    *(write.key, _pod(write)),
                    extra=_fields(write),
                )
                taken.add(write.key)
        self._release(write)
        self.writes.resolve(write.key)

    def _log_applied(self, write: Write, op: Op, result: TxnResult) -> None:
        """One line per key written, naming pod, namespace, service and key (text and JSON).

        A dry run's etcd adapter records writes without making them, and its result says so:
        the line is the same, marked as what would have been written."""
        verb = "dry-run: would " if result.dry_run else ""
        verb += "put" if isinstance(op, PutOp) else "delete"
        extra = _fields(write) | {"revision": result.revision, "dry_run": result.dry_run}
        if isinstance(op, PutOp):
            extra["lease"] = f"{op.lease:x}"
        logger.info("%s %s for pod %s", verb, _describe(op), _pod(write), extra=extra)

    # --- ownership --------------------------------------------------------------------------

    def _forget(self, key: str) -> None:
        """`key` is no longer ours (gone, or taken over): its lease slot is free again."""
        held = self.held.pop(key, None)
        if held is not None:
            self.leases.free(held.lease, key)

    def _lease_lost(self, lease: Lease) -> None:
        keys = {
            k for k in lease.keys if (h := self.held.get(k)) is not None and h.lease == lease.id
        }
        for key in keys:
            del self.held[key]
        logger.warning(
            "lease %x of %s/%s lost; re-writing its %d keys",
            *(lease.id, lease.pool.namespace, lease.pool.service, len(keys)),
        )
        self.setbacks.lease_lost(keys)

    # --- sweep support ----------------------------------------------------------------------

    async def refresh_view(self, keys: Iterable[str]) -> None:
        """Re-read `keys` and every key on our leases from etcd, and trust what it says.

        Keys written while the read ran are left alone: the write is newer than the read.
        """
        committed: set[str] = set()
        self._committed_during_read = committed
        try:
            owned: set[str] = set()
            for lease in list(self.leases.by_id.values()):
                info = await self.etcd.time_to_live(lease.id)
                if not info.alive:
                    self.leases.lost(lease.id)
                    continue
                owned.update(info.keys)
            wanted = {
                k
                for k in set(keys) | owned | self.held.keys()
                if not k.startswith(self.owner_prefix)
            }
            actual = await self.etcd.get_many(wanted)
            for n, key in enumerate(wanted):
                if n % VIEW_SLICE == VIEW_SLICE - 1:
                    await asyncio.sleep(0)  # let pod events in between slices
                if key in committed or self.writes.latest(key) is not None:
                    continue  # written since the read: newer than what it returned
                kv = actual.get(key)
                owner = self.leases.by_id.get(kv.lease) if kv is not None else None
                if kv is not None and owner is not None:
                    known = self.held.get(key)
                    self.held[key] = Held(
                        kv.value, kv.lease, owner.pool, known.pod if known else ""
                    )
                    self.leases.take(kv.lease, key)
                    self.foreign.pop(key, None)
                else:
                    self._forget(key)
                    if kv is not None:  # another writer's: never ours to overwrite
                        self.foreign[key] = kv.value
                    else:
                        self.foreign.pop(key, None)
            for key in self.foreign.keys() - wanted:  # nobody wants it any more
                del self.foreign[key]
        finally:
            self._committed_during_read = None


def _describe(op: Op) -> str:
    if isinstance(op, PutOp):
        return f"{op.key}={op.value!r} (lease {op.lease:x})"
    return op.key


def _pod(write: Write) -> str:
    namespace, service = (write.pool.namespace, write.pool.service) if write.pool else ("?", "?")
    return f"{namespace}/{write.pod or '?'} (service {service})"


def _fields(write: Write) -> dict[str, object]:
    """Structured fields of a log line about a key (JSON logs carry them as such)."""
    namespace, service = (write.pool.namespace, write.pool.service) if write.pool else (None, None)
    return {"key": write.key, "namespace": namespace, "service": service, "pod": write.pod or None}
