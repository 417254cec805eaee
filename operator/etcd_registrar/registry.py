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
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from etcd_registrar import metrics
from etcd_registrar.etcd import (
    ABSENT,
    KV,
    MAX_TXN_OPS,
    DeleteOp,
    Etcd,
    EtcdError,
    EtcdUnavailable,
    Fence,
    Fenced,
    KeepAliveStream,
    LeaseNotFound,
    Op,
    PutOp,
    TxnResult,
)
from etcd_registrar.formats import RESERVED_PREFIX
from etcd_registrar.model import TTL_MAX, TTL_MIN
from etcd_registrar.plan import Current, Pool, pool_of
from etcd_registrar.source import Endpoint
from etcd_registrar.supervisor import Backoff, Loop

logger = logging.getLogger(__name__)

BATCH_OPS = MAX_TXN_OPS - 1  # see _take_batch
VIEW_SLICE = 1000  # keys re-read per step of a sweep, with pod events let in between
EMPTY_LEASE_GRACE = 60.0  # keep an empty lease this long: a flapping pod must not churn leases


@dataclass(slots=True)
class Lease:
    id: int
    pool: Pool
    keys: set[str] = field(default_factory=set)
    next_refresh: float = 0.0
    empty_since: float | None = None
    unanswered_since: float | None = None  # a keepalive sent on this stream, not yet answered


def owner_keys(owner: str) -> str:
    """The bookkeeping of the operators of `owner`, under the reserved prefix."""
    return f"{RESERVED_PREFIX}/{owner}/"


def lease_records(owner: str) -> str:
    """Where an operator of `owner` records its leases."""
    return f"{owner_keys(owner)}leases/"


def read_record(kv: KV, owner_prefix: str) -> Pool:
    """The pool a lease record names; ValueError if the record is not one we wrote.

    Records live under a prefix a tenant could once write to: trust nothing in them."""
    if kv.lease <= 0 or kv.key != f"{owner_prefix}{kv.lease:x}":
        raise ValueError(f"record {kv.key!r} is not attached to the lease its name gives")
    try:
        data = json.loads(kv.value) if len(kv.value) < 1024 else None
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or set(data) != {"namespace", "service", "ttl"}:
        raise ValueError(f"record {kv.key!r} is not {{namespace, service, ttl}}")
    namespace, service, ttl = data["namespace"], data["service"], data["ttl"]
    if not (isinstance(namespace, str) and isinstance(service, str)):
        raise ValueError(f"record {kv.key!r}: namespace and service must be strings")
    if type(ttl) is not int or not TTL_MIN <= ttl <= TTL_MAX:
        raise ValueError(f"record {kv.key!r}: ttl {ttl!r} is not {TTL_MIN}-{TTL_MAX}")
    return (namespace, service, ttl)


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
        self.owner_prefix = lease_records(owner)
        self.dry_run = dry_run
        self.keys_per_lease = keys_per_lease
        self.on_lease_lost = on_lease_lost
        # Keys another writer holds that a pod wants (not overwritten), and writes etcd
        # refused: the controller re-plans both and reports them on the pods.
        self.on_taken: Callable[[set[str]], None] = lambda keys: None
        self.on_refused: Callable[[Write, str], None] = lambda write, reason: None
        # Only a leader writes (HA), fenced by its leader key; a registry on its own leads.
        self.leading = True
        self.fence: Fence | None = None
        self.on_fenced: Callable[[str], None] = lambda reason: None
        self.held: dict[str, Held] = {}
        self.foreign: dict[str, str] = {}  # key -> value another writer holds there
        self._leases: dict[int, Lease] = {}
        self._pending: dict[str, Write] = {}
        self._inflight: dict[str, Write] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._committed_during_read: set[str] | None = None
        self._wakeup = asyncio.Event()
        self.loops: list[Loop] = []
        self._stale = False  # held may be behind etcd (a standby followed another leader)
        self._revokes: set[asyncio.Task[None]] = set()
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
        self.loops = [
            Loop("etcd-writer", self._write_loop).start(),
            Loop("lease-keepalive", self._keepalive_loop).start(),
        ]

    async def close(self) -> None:
        """Stop without revoking: keys outlive a restart by up to one TTL, or get adopted."""
        for loop in self.loops:
            await loop.stop()
        await self.etcd.close()

    async def promote(self, fence: Fence) -> None:
        """This replica leads now: write, fenced by `fence`, from here on. If another leader
        wrote since this registry last read etcd, read what it holds first (the keys, on the
        leases the standby kept alive)."""
        if self._stale:
            self.held.clear()
            self.foreign.clear()
            await self._adopt()
        self.fence, self.leading = fence, True

    def demote(self) -> None:
        """Another replica leads: write nothing more (queued writes are its to make now)."""
        self.fence, self.leading = None, False
        for key in list(self._pending):
            del self._pending[key]
            self._resolve(key)

    async def follow(self) -> None:
        """Standby: keep alive every lease the leader recorded (keepalives are idempotent),
        so no key lapses while any replica lives."""
        records, _ = await self.etcd.get_prefix(self.owner_prefix)
        self._stale = True  # another replica leads and writes
        recorded: set[int] = set()
        for record in records:
            try:
                pool = read_record(record, self.owner_prefix)
            except Exception:  # noqa: S112 - the leader logged it when it adopted
                continue
            recorded.add(record.lease)
            if record.lease not in self._leases:
                self._leases[record.lease] = Lease(record.lease, pool, next_refresh=0.0)
        for lease_id in self._leases.keys() - recorded:  # revoked or expired meanwhile
            if self._leases.pop(lease_id).keys:  # keys on it: not retired empty, but lost
                metrics.lease_regrants.inc()
        metrics.leases.set(len(self._leases))

    async def _adopt(self) -> None:
        self._stale = False
        records, _ = await self.etcd.get_prefix(self.owner_prefix)
        now = time.monotonic()
        for record in records:
            try:
                pool = read_record(record, self.owner_prefix)
            except Exception as exc:  # RecursionError from deep JSON included
                logger.warning("lease record %s skipped: %s", record.key, exc)
                continue
            info = await self.etcd.time_to_live(record.lease)
            if not info.alive:
                continue
            if info.granted != pool[2]:
                logger.warning(
                    "lease record %s skipped: it says ttl %d, the lease was granted %d",
                    *(record.key, pool[2], info.granted),
                )
                continue
            keys = [k for k in info.keys if k != record.key]
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
        """The key as it will be once queued writes land (what plans must diff against);
        pool None: another writer holds it."""
        write = self._pending.get(key) or self._inflight.get(key)
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
                if await self._write(self._take_batch()):
                    await backoff.sleep()
                else:
                    backoff.reset()

    async def _write(self, batch: list[Write]) -> bool:
        """Commit `batch`; True when etcd is unavailable and the writer should back off.

        A batch etcd refuses as a whole is split until the refused write stands alone: one
        bad key (a prefix the etcd role may not write, an oversized value) fails only itself,
        never the 127 batched with it."""
        error: Exception
        try:
            ops = [await self._op_for(write) for write in batch]
            result = await self._commit([op for op in ops if op is not None])
        except LeaseNotFound:
            self._requeue(batch)
            await self._drop_dead_leases()
            return False
        except Fenced as exc:  # another replica leads: its writes, not ours, are the truth
            metrics.fenced_writes.inc()
            self._requeue(batch)
            self.demote()
            self.on_fenced(f"etcd refused a write: {exc}")
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

    def _take_batch(self) -> list[Write]:
        """Up to 127 writes: each is a guarded (nested) transaction, and etcd allows a nested
        one only the ops the outer one leaves over, so 128 would leave it none."""
        batch = [self._pending[key] for key in itertools.islice(self._pending, BATCH_OPS)]
        for write in batch:
            del self._pending[write.key]
            self._inflight[write.key] = write
        return batch

    def _requeue(self, batch: list[Write]) -> None:
        for write in batch:
            self._release(write)
            self._pending.setdefault(write.key, write)  # a newer write for the key wins
        self._wakeup.set()

    def _release(self, write: Write) -> None:
        """`write` leaves flight: its key gives up a lease slot it reserved but never used."""
        del self._inflight[write.key]
        held = self.held.get(write.key)
        for lease in self._leases.values():
            if write.key in lease.keys and (held is None or held.lease != lease.id):
                lease.keys.discard(write.key)

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
        self._resolve(write.key)
        self.on_refused(write, reason)

    async def _commit(self, ops: list[Op]) -> TxnResult:
        if self.dry_run or not ops:
            return TxnResult(0, {})  # _applied logs each write as "dry-run: would ..."
        if not self.leading:
            raise Fenced("this replica does not lead")
        result = await self.etcd.txn(ops, self.fence)
        metrics.txn_ops.observe(len(ops))
        return result

    def _applied(self, batch: list[Write], ops: list[Op | None], result: TxnResult) -> None:
        now = time.monotonic()
        sent = itertools.count()
        taken: set[str] = set()
        for write, op in zip(batch, ops, strict=True):
            index = next(sent) if op is not None else -1
            if index in result.refused:
                self._guard_failed(write, op, result.refused[index], taken)
                continue
            del self._inflight[write.key]
            old = self.held.pop(write.key, None)
            if old is not None and (previous := self._leases.get(old.lease)) is not None:
                previous.keys.discard(write.key)
                if not previous.keys:
                    previous.empty_since = now
            if isinstance(op, PutOp) and write.pool is not None and write.value is not None:
                self.foreign.pop(write.key, None)
                if (lease := self._leases.get(op.lease)) is not None:
                    self.held[write.key] = Held(write.value, op.lease, write.pool, write.pod)
                    lease.keys.add(write.key)
                    lease.empty_since = None
                else:  # the lease was lost while the put was in flight: the key goes with it
                    self.on_lease_lost({write.key})
            if self._committed_during_read is not None:
                self._committed_during_read.add(write.key)
            if write.seen is not None:
                metrics.propagation.observe(now - write.seen)
            if op is not None:
                self._log_applied(write, op, result.revision)
            self._resolve(write.key)
        if taken:
            self.on_taken(taken)

    def _guard_failed(self, write: Write, op: Op | None, found: KV | None, taken: set[str]) -> None:
        """The key is not what our view said: learn who holds it, then write again only if
        that is us or no one."""
        self._forget(write.key)
        owner = self._leases.get(found.lease) if found is not None else None
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

    async def _op_for(self, write: Write) -> Op | None:
        """The guarded op for `write`; None for a delete of a key that is not ours."""
        held = self.held.get(write.key)
        if write.value is None or write.pool is None:
            return None if held is None else DeleteOp(write.key, held.lease)
        expect = ABSENT if held is None else held.lease
        if held is not None and held.pool == write.pool and held.lease in self._leases:
            return PutOp(write.key, write.value, held.lease, expect)
        lease = await self._lease_with_room(write.pool, write.key)
        return PutOp(write.key, write.value, lease, expect)

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
            if not self.leading:
                raise Fenced("this replica does not lead")
            await self.etcd.put(f"{self.owner_prefix}{lease_id:x}", record, lease_id, self.fence)
        self._leases[lease_id] = Lease(lease_id, pool, set(), time.monotonic() + ttl / 3)
        metrics.leases.set(len(self._leases))
        logger.info("granted lease %x (ttl %ds) for %s/%s", lease_id, ttl, namespace, service)
        return lease_id

    async def _drop_dead_leases(self) -> None:
        try:
            for lease in list(self._leases.values()):
                if lease.id > 0 and not (await self.etcd.time_to_live(lease.id)).alive:
                    self._lost(lease.id)
        except EtcdError as exc:  # the next write tells again
            logger.warning("could not check leases: %s", exc)

    def _forget(self, key: str) -> None:
        """`key` is no longer ours (gone, or taken over): its lease slot is free again."""
        held = self.held.pop(key, None)
        if held is not None and (lease := self._leases.get(held.lease)) is not None:
            lease.keys.discard(key)
            if not lease.keys:
                lease.empty_since = time.monotonic()

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
                stream = await self.etcd.keepalive_stream()
                for lease in self._leases.values():
                    lease.unanswered_since = None
                reader = asyncio.create_task(self._read_acks(stream))
                await self._send_refreshes(stream, reader, backoff)
            except (EtcdError, asyncio.InvalidStateError) as exc:  # the stream ended under us
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
                if (
                    lease.empty_since is not None
                    and now - lease.empty_since > EMPTY_LEASE_GRACE
                    and self.leading
                ):
                    self._retire(lease)
                elif lease.id > 0 and not self.dry_run and lease.next_refresh <= now:
                    # A stream that looks healthy but answers nothing: a new one, not expiry.
                    if lease.unanswered_since is not None:
                        raise EtcdUnavailable(f"no keepalive answer for lease {lease.id:x}")
                    await stream.send(lease.id)
                    lease.unanswered_since = now
                    lease.next_refresh = now + lease.pool[2] / 3
            await asyncio.wait({reader}, timeout=0.2)
            backoff.reset()
        reader.result()  # re-raise what broke the stream

    async def _read_acks(self, stream: KeepAliveStream) -> None:
        while True:
            lease_id, ttl = await stream.receive()
            if ttl <= 0:  # a keepalive of a lease etcd no longer has answers TTL 0
                self._lost(lease_id)
            elif (lease := self._leases.get(lease_id)) is not None:
                lease.unanswered_since = None

    def _retire(self, lease: Lease) -> None:
        if lease.keys:
            lease.empty_since = None
            return
        self._leases.pop(lease.id, None)
        metrics.leases.set(len(self._leases))
        if lease.id > 0 and not self.dry_run:  # off the keepalive loop: a revoke is a raft write
            revoke = asyncio.create_task(self._revoke(lease.id))
            self._revokes.add(revoke)
            revoke.add_done_callback(self._revokes.discard)

    async def _revoke(self, lease_id: int) -> None:
        try:
            await self.etcd.revoke(lease_id)
        except EtcdError as exc:  # it expires by itself
            logger.info("revoking empty lease %x failed: %s", lease_id, exc)

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
                info = await self.etcd.time_to_live(lease.id)
                if not info.alive:
                    self._lost(lease.id)
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
