"""The lease pool: the leases the operator's keys live on, their records, and keepalives.

- Leases are pooled per (namespace, service, TTL), at most `keys_per_lease` keys each, all kept
  alive over one stream at TTL/3. A lost lease is dropped and reported; the registry re-writes
  its keys.
- Every lease is recorded under ``/etcd-registrar/<owner>/leases/<id>``, attached to the lease
  itself, so a restarted operator (or a standby) finds its predecessor's leases.
- The record names the cluster that granted the lease (its kube-system namespace UID): an
  operator never adopts nor renews another cluster's leases sharing its owner id.
- The record is the lease's title: a leader adopts only the leases recorded when it reads
  them after its election, and retires an empty lease by deleting its record in a
  transaction fenced by its term before it revokes the lease. A leader deposed unawares is
  refused that delete, so it never revokes a lease its successor has put keys on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from etcd_registrar import metrics
from etcd_registrar.candidacy import is_foreign, record_cluster
from etcd_registrar.etcd import (
    KV,
    DeleteOp,
    EtcdError,
    EtcdUnavailable,
    Fence,
    Fenced,
    KeepAliveStream,
)
from etcd_registrar.formats import RESERVED_PREFIX
from etcd_registrar.model import TTL_MAX, TTL_MIN
from etcd_registrar.port import EtcdPort
from etcd_registrar.source import Pool
from etcd_registrar.supervisor import Backoff
from etcd_registrar.term import Term

logger = logging.getLogger(__name__)

EMPTY_LEASE_GRACE = 60.0  # keep an empty lease this long: a flapping pod must not churn leases


@dataclass(slots=True)
class Lease:
    id: int
    pool: Pool
    keys: set[str] = field(default_factory=set)  # held, or reserved by a write in flight
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
    if not isinstance(data, dict) or set(data) - {"cluster"} != {"namespace", "service", "ttl"}:
        raise ValueError(f"record {kv.key!r} is not {{namespace, service, ttl}} (and a cluster)")
    if not isinstance(data.get("cluster", ""), str):
        raise ValueError(f"record {kv.key!r}: cluster must be a string")
    namespace, service, ttl = data["namespace"], data["service"], data["ttl"]
    if not (isinstance(namespace, str) and isinstance(service, str)):
        raise ValueError(f"record {kv.key!r}: namespace and service must be strings")
    if type(ttl) is not int or not TTL_MIN <= ttl <= TTL_MAX:
        raise ValueError(f"record {kv.key!r}: ttl {ttl!r} is not {TTL_MIN}-{TTL_MAX}")
    return Pool(namespace, service, ttl)


def _record(pool: Pool, cluster: str) -> str:
    record = {"namespace": pool.namespace, "service": pool.service, "ttl": pool.ttl}
    return json.dumps(record | ({"cluster": cluster} if cluster else {}))


class LeasePool:
    """The leases of one owner. Records are written and leases retired under `term` (only
    while this replica leads); `on_lost` hears of each lease etcd no longer has."""

    def __init__(
        self,
        etcd: EtcdPort,
        owner: str,
        *,
        keys_per_lease: int,
        term: Term,
        on_lost: Callable[[Lease], None],
        cluster: str = "",
    ) -> None:
        self.etcd, self.cluster = etcd, cluster
        self.prefix = lease_records(owner)
        self.keys_per_lease = keys_per_lease
        self.term, self.on_lost = term, on_lost
        self.by_id: dict[int, Lease] = {}
        self._revokes: set[asyncio.Task[None]] = set()

    def owned(self) -> set[str]:
        return {k for lease in self.by_id.values() for k in lease.keys}

    # --- finding and granting ----------------------------------------------------------------

    async def with_room(self, pool: Pool, key: str) -> int:
        """A lease of `pool` for `key`; the key takes its slot now so a batch cannot overfill."""
        candidates = [lease for lease in self.by_id.values() if lease.pool == pool]
        for lease in candidates:
            if key in lease.keys:
                return lease.id
        for lease in candidates:
            if len(lease.keys) < self.keys_per_lease:
                lease.keys.add(key)
                lease.empty_since = None
                return lease.id
        lease_id = await self._grant(pool)
        self.by_id[lease_id].keys.add(key)
        return lease_id

    async def _grant(self, pool: Pool) -> int:
        fence = self.term.fence()  # a replica that does not lead grants nothing
        lease_id = await self.etcd.grant(pool.ttl)
        record = _record(pool, self.cluster)
        await self.etcd.put(f"{self.prefix}{lease_id:x}", record, lease_id, fence)
        self.by_id[lease_id] = Lease(lease_id, pool, set(), time.monotonic() + pool.ttl / 3)
        metrics.leases.set(len(self.by_id))
        logger.info(
            "granted lease %x (ttl %ds) for %s/%s", lease_id, pool.ttl, pool.namespace, pool.service
        )
        return lease_id

    # --- which key is on which lease ---------------------------------------------------------

    def take(self, lease_id: int, key: str) -> bool:
        """`key` is on lease `lease_id` now; False if we no longer have that lease."""
        lease = self.by_id.get(lease_id)
        if lease is None:
            return False
        lease.keys.add(key)
        lease.empty_since = None
        return True

    def free(self, lease_id: int, key: str) -> None:
        """`key` left lease `lease_id`: its slot is free again, and the lease may go empty."""
        lease = self.by_id.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)
            if not lease.keys:
                lease.empty_since = time.monotonic()

    def unreserve(self, key: str, held_on: int | None) -> None:
        """A write of `key` left flight: give up the slots it reserved on leases other than
        the one it is held on (a lease granted for a write that never landed may go empty)."""
        for lease in self.by_id.values():
            if key in lease.keys and lease.id != held_on:
                self.free(lease.id, key)

    # --- reading the records -----------------------------------------------------------------

    async def adopt(self) -> None:
        """Take over the live leases recorded now, with the keys etcd has on them (the
        registry then keeps those it holds: `keep`); forget any other (a lease a standby
        followed may have been retired since). The pool is swapped at the end: the leases
        known before are renewed while the records are read."""
        records, _ = await self.etcd.get_prefix(self.prefix)
        now = time.monotonic()
        adopted: dict[int, Lease] = {}
        for record in records:
            try:
                pool = read_record(record, self.prefix)
            except Exception as exc:  # RecursionError from deep JSON included
                logger.warning("lease record %s skipped: %s", record.key, exc)
                continue
            if self._foreign(record):
                logger.error("lease record %s skipped: another cluster's", record.key)
                continue
            info = await self.etcd.time_to_live(record.lease)
            if not info.alive:
                continue
            if info.granted != pool.ttl:
                logger.warning(
                    "lease record %s skipped: it says ttl %d, the lease was granted %d",
                    *(record.key, pool.ttl, info.granted),
                )
                continue
            keys = [k for k in info.keys if k != record.key]
            adopted[record.lease] = Lease(record.lease, pool, set(keys), now)
        for lease_id, lease in self.by_id.items():
            if lease.keys and lease_id not in adopted:  # gone with keys on it: lost
                metrics.lease_regrants.inc()
        self.by_id = adopted
        metrics.leases.set(len(self.by_id))

    def _foreign(self, record: KV) -> bool:
        return is_foreign(record_cluster(record.value), self.cluster)

    def keep(self, held: Iterable[str]) -> None:
        """Only `held` keys are on our leases; one left without any may be retired."""
        now, held = time.monotonic(), set(held)
        for lease in self.by_id.values():
            lease.keys &= held
            lease.empty_since = None if lease.keys else now

    async def follow(self) -> None:
        """Standby: keep alive every lease the leader recorded (keepalives are idempotent),
        so no key lapses while any replica lives. Returns once the records change (watched:
        no request meanwhile), for the caller to read them again."""
        records, revision = await self.etcd.get_prefix(self.prefix)
        if self.term.leading:  # promoted during the read: the leader's own pool is the truth
            return
        self._follow(records)
        async with contextlib.aclosing(
            self.etcd.watch_prefix(self.prefix, revision + 1)
        ) as changes:
            await anext(changes)

    def _follow(self, records: list[KV]) -> None:
        recorded: set[int] = set()
        for record in records:
            try:
                pool = read_record(record, self.prefix)
            except Exception:  # noqa: S112 - the leader logged it when it adopted
                continue
            if self._foreign(record):
                continue
            recorded.add(record.lease)
            if record.lease not in self.by_id:
                self.by_id[record.lease] = Lease(record.lease, pool, next_refresh=0.0)
        for lease_id in self.by_id.keys() - recorded:  # revoked or expired meanwhile
            if self.by_id.pop(lease_id).keys:  # keys on it: not retired empty, but lost
                metrics.lease_regrants.inc()
        metrics.leases.set(len(self.by_id))

    # --- losing and retiring -----------------------------------------------------------------

    async def drop_dead(self) -> None:
        try:
            for lease in list(self.by_id.values()):
                if not (await self.etcd.time_to_live(lease.id)).alive:
                    self.lost(lease.id)
        except EtcdError as exc:  # the next write tells again
            logger.warning("could not check leases: %s", exc)

    def lost(self, lease_id: int) -> None:
        lease = self.by_id.pop(lease_id, None)
        if lease is None:
            return
        metrics.lease_regrants.inc()
        metrics.leases.set(len(self.by_id))
        self.on_lost(lease)

    def _retire(self, lease: Lease) -> None:
        if lease.keys:
            lease.empty_since = None
            return
        fence = self.term.fence()  # this term's, taken now: a later term decides for itself
        self.by_id.pop(lease.id, None)
        metrics.leases.set(len(self.by_id))
        revoke = asyncio.create_task(self._revoke(lease, fence))  # off the keepalive loop
        self._revokes.add(revoke)
        revoke.add_done_callback(self._revokes.discard)

    async def _revoke(self, lease: Lease, fence: Fence | None) -> None:
        """Delete the lease's record, fenced, then revoke it. Once the delete applied, no
        later leader adopts the lease (it reads the records after its election, which came
        after this term's end). If it is refused, another leader may hold keys on it: it is
        renewed again, as a standby renews every recorded lease."""
        try:
            result = await self.etcd.txn([DeleteOp(f"{self.prefix}{lease.id:x}", lease.id)], fence)
            if not result.refused:  # else the record went with the lease: nothing to revoke
                await self.etcd.revoke(lease.id)
        except Fenced as exc:
            metrics.fenced_writes.inc()
            logger.warning("empty lease %x not retired, another replica leads: %s", lease.id, exc)
            self.by_id.setdefault(lease.id, Lease(lease.id, lease.pool))
            metrics.leases.set(len(self.by_id))
        except EtcdError as exc:  # it expires by itself once no replica renews it
            logger.info("retiring empty lease %x failed: %s", lease.id, exc)

    # --- keepalives --------------------------------------------------------------------------

    async def keepalive_loop(self) -> None:
        # Reconnect fast: after an etcd restart, leases are re-armed with just their TTL.
        backoff = Backoff(base=0.05, cap=1.0)
        while True:
            stream: KeepAliveStream | None = None
            reader: asyncio.Task[None] | None = None
            try:
                stream = await self.etcd.keepalive_stream()
                for lease in self.by_id.values():
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
            for lease in list(self.by_id.values()):
                if (
                    lease.empty_since is not None
                    and now - lease.empty_since > EMPTY_LEASE_GRACE
                    and self.term.leading
                ):
                    self._retire(lease)
                elif lease.next_refresh <= now:
                    # A stream that looks healthy but answers nothing: a new one, not expiry.
                    if lease.unanswered_since is not None:
                        raise EtcdUnavailable(f"no keepalive answer for lease {lease.id:x}")
                    await stream.send(lease.id)
                    lease.unanswered_since = now
                    lease.next_refresh = now + lease.pool.ttl / 3
            await asyncio.wait({reader}, timeout=0.2)
            backoff.reset()
        reader.result()  # re-raise what broke the stream

    async def _read_acks(self, stream: KeepAliveStream) -> None:
        while True:
            lease_id, ttl = await stream.receive()
            if ttl <= 0:  # a keepalive of a lease etcd no longer has answers TTL 0
                self.lost(lease_id)
            elif (lease := self.by_id.get(lease_id)) is not None:
                lease.unanswered_since = None
