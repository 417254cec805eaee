"""Service claims recorded in etcd, so an owner keeps its key ranges across restarts.

Records live under ``/etcd-registrar/<owner>/claims/<identity>`` with no lease: a claim
outlives the operator, and is deleted only when it is released. A record names the cluster
that wrote it; another cluster's records are not loaded (while they exist, no replica of
this cluster leads: election.py). Writes are coalesced (the
latest owner of an identity wins) and written by a loop of their own, off the hot path.

Every replica also follows the claims other owner ids (other clusters sharing this etcd)
record, with the namespaces they share with: claims hold across clusters (`follow`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import NamedTuple, Protocol

from etcd_registrar.candidacy import is_foreign, record_cluster
from etcd_registrar.etcd import DeleteOp, EtcdError, Fenced, PutOp, WatchCompacted
from etcd_registrar.formats import RESERVED_PREFIX
from etcd_registrar.leases import owner_keys
from etcd_registrar.model import DNS_LABEL_PATTERN
from etcd_registrar.port import EtcdPort
from etcd_registrar.supervisor import Backoff
from etcd_registrar.tenancy import Remote
from etcd_registrar.term import Term

logger = logging.getLogger(__name__)

CHUNK = 128  # ops per transaction: claims change rarely, a handful at a time


def recorded_owner(value: str) -> str:
    """The namespace a claim record names; ValueError if it is not a record we wrote."""
    namespace = json.loads(value)["namespace"] if len(value) < 1024 else None
    if not isinstance(namespace, str) or not re.fullmatch(DNS_LABEL_PATTERN, namespace):
        raise ValueError(f"{namespace!r} is not a namespace name")
    return namespace


def claim_record(owner: str, identity: str) -> str:
    """Where the operators of `owner` record the owner of `identity`."""
    return f"{owner_keys(owner)}claims/{identity}"


def parse_claim_key(key: str) -> tuple[str, str] | None:
    """(owner id, identity) of a claim record's key; None: not a claim record."""
    owner, found, identity = key.removeprefix(f"{RESERVED_PREFIX}/").partition("/claims/")
    return (owner, identity) if found and owner and "/" not in owner and identity else None


def remote_claim(value: str, revision: int) -> Remote:
    """Another owner id's record as a claim here; ValueError if it is not a record we write."""
    shared = json.loads(value).get("shareWith", []) if len(value) < 4096 else None
    if not isinstance(shared, list) or not all(
        isinstance(n, str) and re.fullmatch(DNS_LABEL_PATTERN, n) for n in shared
    ):
        raise ValueError(f"shareWith {shared!r} is not a list of namespace names")
    return Remote(recorded_owner(value), frozenset(shared), revision)


class ClaimsElsewhere(Protocol):
    """Who learns of the claims in etcd: other owner ids' (other clusters') and the create
    revisions of our own records (the older of two overlapping claims stands)."""

    def on_remote_claim(self, owner_id: str, identity: str, claim: Remote | None) -> None: ...

    def on_recorded(self, identity: str, revision: int | None) -> None: ...


class Record(NamedTuple):
    namespace: str
    shared: frozenset[str]


class ClaimStore:
    def __init__(self, etcd: EtcdPort, term: Term, owner: str, cluster: str = "") -> None:
        self.etcd, self.cluster = etcd, cluster
        self.term = term  # only the leader records claims, fenced like its other writes
        self.prefix = claim_record(owner, "")
        self.owner = owner
        self._pending: dict[str, Record | None] = {}  # identity -> record (None: released)
        self._wakeup = asyncio.Event()
        self.synced = asyncio.Event()  # every claim in etcd told once (`follow`)

    async def load(self) -> dict[str, str]:
        """The recorded owners (identity -> namespace); a record we did not write is skipped."""
        records, _ = await self.etcd.get_prefix(self.prefix)
        owners: dict[str, str] = {}
        for record in records:
            try:
                if is_foreign(record_cluster(record.value), self.cluster):
                    raise ValueError("another cluster's")
                owners[record.key.removeprefix(self.prefix)] = recorded_owner(record.value)
            except Exception as exc:  # anything: a bad record must not stop the start
                logger.warning("claim record %s skipped: %s", record.key, exc)
        return owners

    def record(
        self, identity: str, owner: str | None, shared: frozenset[str] = frozenset()
    ) -> None:
        """Record `owner` (None: released) of `identity`, and who it shares with (other
        clusters honour it)."""
        self._pending[identity] = None if owner is None else Record(owner, shared)
        self._wakeup.set()

    async def follow(self, listener: ClaimsElsewhere) -> None:
        """Tell `listener` every claim record in etcd: other owner ids' as claims, ours as
        create revisions; read all, then watch (read again after a compaction)."""
        while True:
            records, revision = await self.etcd.get_prefix(f"{RESERVED_PREFIX}/")
            for kv in records:
                self._tell(listener, kv.key, kv.value, kv.create_revision)
            self.synced.set()
            try:
                async for event in self.etcd.watch_prefix(f"{RESERVED_PREFIX}/", revision + 1):
                    deleted = event.kind == "DELETE"
                    self._tell(
                        listener, event.key, event.value, 0 if deleted else event.create_revision
                    )
            except WatchCompacted:
                continue

    def _tell(self, listener: ClaimsElsewhere, key: str, value: str, revision: int) -> None:
        """One record (revision 0: deleted) to `listener`."""
        parsed = parse_claim_key(key)
        if parsed is None:
            return
        owner, identity = parsed
        if owner == self.owner:
            listener.on_recorded(identity, revision or None)
            return
        claim: Remote | None = None
        if revision:
            try:
                claim = remote_claim(value, revision)
            except Exception as exc:  # a bad record must not stop the others
                logger.warning("claim record %s skipped: %s", key, exc)
        listener.on_remote_claim(owner, identity, claim)

    async def run(self) -> None:
        backoff = Backoff(cap=5.0)
        while True:
            await self._wakeup.wait()
            await self.term.began()  # recorded once this replica leads
            self._wakeup.clear()
            batch, self._pending = self._pending, {}
            try:
                await self._write(batch)
                backoff.reset()
            except Fenced as exc:  # deposed: kept for when this replica leads again
                self.term.end(f"etcd refused to record claims: {exc}")
                self._wakeup.set()
                self._pending = batch | self._pending  # newer records win
            except EtcdError as exc:
                logger.warning("recording %d claims failed (%s); retrying", len(batch), exc)
                self._pending = batch | self._pending  # newer records win
                self._wakeup.set()
                await backoff.sleep()

    def _value(self, record: Record) -> str:
        return json.dumps(
            {"namespace": record.namespace}
            | ({"cluster": self.cluster} if self.cluster else {})
            | ({"shareWith": sorted(record.shared)} if record.shared else {})
        )

    async def _write(self, batch: dict[str, Record | None]) -> None:
        ops = [
            PutOp(self.prefix + identity, self._value(record))
            if record is not None
            else DeleteOp(self.prefix + identity)
            for identity, record in batch.items()
        ]
        for start in range(0, len(ops), CHUNK):
            chunk = ops[start : start + CHUNK]
            if (await self.etcd.txn(chunk, self.term.fence())).dry_run:
                logger.info("dry-run: would record %d claims", len(chunk))
