"""Service claims recorded in etcd, so an owner keeps its key ranges across restarts.

Records live under ``/etcd-registrar/<owner>/claims/<identity>`` with no lease: a claim
outlives the operator, and is deleted only when it is released. A record names the cluster
that wrote it; another cluster's records are not loaded (while they exist, no replica of
this cluster leads: election.py). Writes are coalesced (the
latest owner of an identity wins) and written by a loop of their own, off the hot path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

from etcd_registrar.candidacy import is_foreign, record_cluster
from etcd_registrar.etcd import DeleteOp, EtcdError, Fenced, PutOp
from etcd_registrar.leases import owner_keys
from etcd_registrar.model import DNS_LABEL_PATTERN
from etcd_registrar.port import EtcdPort
from etcd_registrar.supervisor import Backoff
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


class ClaimStore:
    def __init__(self, etcd: EtcdPort, term: Term, owner: str, cluster: str = "") -> None:
        self.etcd, self.cluster = etcd, cluster
        self.term = term  # only the leader records claims, fenced like its other writes
        self.prefix = claim_record(owner, "")
        self._pending: dict[str, str | None] = {}  # identity -> owner (None: released)
        self._wakeup = asyncio.Event()

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

    def record(self, identity: str, owner: str | None) -> None:
        self._pending[identity] = owner
        self._wakeup.set()

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

    def _record(self, namespace: str) -> str:
        return json.dumps(
            {"namespace": namespace} | ({"cluster": self.cluster} if self.cluster else {})
        )

    async def _write(self, batch: dict[str, str | None]) -> None:
        ops = [
            PutOp(self.prefix + identity, self._record(owner))
            if owner is not None
            else DeleteOp(self.prefix + identity)
            for identity, owner in batch.items()
        ]
        for start in range(0, len(ops), CHUNK):
            chunk = ops[start : start + CHUNK]
            if (await self.etcd.txn(chunk, self.term.fence())).dry_run:
                logger.info("dry-run: would record %d claims", len(chunk))
