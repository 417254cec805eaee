"""Leader election among the replicas of one owner id, in the etcd they write to.

etcd's own concurrency pattern: the leader key ``/etcd-registrar/<owner>/leader`` is created
on a short lease of the candidate's own, only if it does not exist. The winner's writes are
fenced by a compare on that key's create revision (``Fence``), so a deposed leader's write is
refused by etcd itself, not merely by its own belief. The lease is watched: when its
keepalives go unanswered for long enough that it may have expired, the leader steps down at
once (etcd's Campaign keeps believing it leads after its session expired: "phantom
leadership"). A leader that stops resigns by deleting its key, so a standby takes over
without waiting for the lease to expire. A standby holds no election lease and sends
nothing: it watches the leader key, and grants a lease to campaign only once the key is
vacant (the watch's DELETE comes the moment a resignation or an expiry removes it).

The leader publishes what it stands for (``Candidate``: its scope, installation and
configuration generation) beside its id. A replica judges the leader it sees (candidacy.py):
another replica of its configuration stands by; a newer configuration of its installation
stands by healthy and leads once the old leader goes (a rollout that changes the scope); a
second installation sharing the owner id by mistake is refused loudly (``misconfigured``),
because the two would delete each other's keys. Nothing latches: a replica that saw an older
or foreign leader still takes the leader key once it has stayed vacant for an election TTL.
The one exception is another cluster sharing the owner id: before a replica first
campaigns, and before one that deferred does, it reads the owner's records, and while any
names another cluster it stands aside, refused, instead of adopting that cluster's leases.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import Protocol

from etcd_registrar import metrics
from etcd_registrar.candidacy import (
    STANDBY,
    Candidate,
    Standing,
    Verdict,
    foreign,
    is_foreign,
    judge,
    record_cluster,
)
from etcd_registrar.etcd import EtcdError, Fence, KeepAliveStream, LeaseNotFound, WatchEvent
from etcd_registrar.leases import owner_keys
from etcd_registrar.port import EtcdPort
from etcd_registrar.supervisor import Backoff

logger = logging.getLogger(__name__)

ELECTION_TTL = 2  # seconds the leader key outlives a leader that stopped without resigning


class Leader(Protocol):
    """Who acts on the outcome of the election (app.Succession)."""

    def elected(self, fence: Fence | None) -> None:
        """This replica won, fenced by `fence` (None: a dry run, leading alone)."""

    def deposed(self) -> None:
        """This replica leads no more."""


class Election:
    def __init__(
        self,
        etcd: EtcdPort,
        owner: str,
        candidate: Candidate,
        leader: Leader,
        *,
        ttl: int = ELECTION_TTL,
    ) -> None:
        self.etcd, self.candidate, self.ttl = etcd, candidate, ttl
        self.outcome = leader
        self.prefix = owner_keys(owner)
        self.key = leader_key(owner)
        self.fence: Fence | None = None
        self.leader: str | None = None  # the id of the replica that leads, as last seen
        self.verdict = STANDBY  # what this replica is beside that leader
        self._vacant_since: float | None = None  # when a deferring replica found no leader
        self._records_read = False  # no record of another cluster found since we started
        self._lease: int | None = None  # our election lease
        self._acked = 0.0  # when etcd last confirmed it

    @property
    def leading(self) -> bool:
        return self.fence is not None

    @property
    def misconfigured(self) -> str | None:
        """Why this replica refuses to stand by (/readyz fails), if it does."""
        return self.verdict.reason if self.verdict.refused else None

    async def run(self) -> None:
        """Stand by, campaign, lead, for ever. A broken stream is reopened on the same
        election lease: a blip of etcd costs no leadership, only an outage long enough that
        the lease may have expired does."""
        backoff = Backoff(cap=1.0)
        while True:
            try:
                if self._lease is None:
                    await self._stand_by()
                    self._lease = await self.etcd.grant(self.ttl)
                    self._acked = time.monotonic()
                await self._term(self._lease)
                lease, self._lease = self._lease, None  # another replica won: stand by again
                await self.etcd.revoke(lease)
            except (_LeaseLost, LeaseNotFound) as exc:
                self.step_down(str(exc))
                self._lease = None
            except EtcdError as exc:
                logger.warning("election: %s", exc)
                if self._unconfirmed():
                    self.step_down(f"etcd unreachable while the election lease ran out: {exc}")
                    self._lease = None
                await backoff.sleep()
            else:
                backoff.reset()

    async def _term(self, lease: int) -> None:
        """Keep `lease` alive on one stream; campaign on it, and lead, until the stream
        breaks (raises) or another replica won (returns)."""
        stream = await self.etcd.keepalive_stream()
        reader = asyncio.create_task(self._read_acks(stream, lease))
        try:
            while not reader.done():
                if self._unconfirmed():
                    raise _LeaseLost("the election lease went unconfirmed; it may have expired")
                await stream.send(lease)
                if not self.leading and not await self._campaign(lease):
                    return
                await asyncio.wait({reader}, timeout=self.ttl / 3 if self.leading else 0)
            reader.result()
        finally:
            reader.cancel()
            stream.close()

    def _unconfirmed(self) -> bool:
        return time.monotonic() - self._acked > self.ttl * 2 / 3

    async def _read_acks(self, stream: KeepAliveStream, lease: int) -> None:
        while True:
            lease_id, ttl = await stream.receive()
            if lease_id != lease:
                continue
            if ttl <= 0:
                raise _LeaseLost("the election lease expired")
            self._acked = time.monotonic()

    async def _campaign(self, lease: int) -> bool:
        """Try to take the leader key; whether to go on campaigning on `lease` (we lead, or
        the key is free again), rather than stand by for the replica that holds it."""
        value = self.candidate.value()
        won, holder = await self.etcd.campaign(self.key, value, lease)
        # A campaign whose answer was lost after etcd applied it finds our own key: ours.
        if holder is not None and (won or holder.lease == lease):
            self.fence, self.leader = Fence(self.key, holder.create_revision), self.candidate.id
            self._judged(STANDBY)
            metrics.leader.set(1)
            metrics.leadership_changes.inc()
            logger.info("elected leader (fence revision %d)", holder.create_revision)
            self.outcome.elected(self.fence)
            return True
        if holder is None:
            return True  # the leader just went: campaign again at once
        if holder.value == value:  # our own key, on the lease we stepped down from
            logger.info("removing our leader key of a lease we gave up; campaigning again")
            await self.etcd.resign(Fence(self.key, holder.create_revision))
            return True
        self._observe(holder.value)
        return False

    async def _stand_by(self) -> None:
        """Until it is time to campaign: watch the leader key (no request while it stays
        as it is), judging each leader it names. Then, if this replica has not read the
        owner's records yet, or defers, look for another cluster's first."""
        while True:
            await self._until_vacant()
            if self._records_read and not self.verdict.defers:
                return
            if not await self._another_cluster():
                return

    async def _until_vacant(self) -> None:
        """Return once the leader key is vacant; a replica that defers waits until it has
        stayed vacant for an election TTL (a replica the leader would stand by for takes it
        first, if one lives). Also return on our own value: a key of a lease we gave up,
        which the campaign removes."""
        found, revision = await self.etcd.get_prefix(self.key)
        holder = next((kv.value for kv in found if kv.key == self.key), None)
        changes = self.etcd.watch_prefix(self.key, revision + 1)
        change: asyncio.Task[WatchEvent] | None = None
        try:
            while True:
                if holder is not None and holder != self.candidate.value():
                    self._vacant_since, wait = None, None
                    self._observe(holder)
                elif holder is None and self.verdict.defers:
                    now = time.monotonic()
                    if self._vacant_since is None:
                        self._vacant_since = now
                    wait = self._vacant_since + self.ttl - now
                    if wait <= 0:
                        return
                else:
                    return
                if change is None:
                    change = asyncio.create_task(_next(changes))
                done, _ = await asyncio.wait({change}, timeout=wait)
                if done:
                    event, change = change.result(), None
                    if event.key == self.key:
                        holder = event.value if event.kind == "PUT" else None
        finally:
            if change is not None:
                change.cancel()
                await asyncio.wait({change})
            await changes.aclose()

    async def _another_cluster(self) -> bool:
        """Whether a record of the owner names another cluster: refused, and looked at
        again only after another election TTL."""
        records, _ = await self.etcd.get_prefix(self.prefix)
        for record in records:
            cluster = record_cluster(record.value)
            if is_foreign(cluster, self.candidate.cluster):
                self._judged(foreign(self.candidate, cluster, f"etcd holds its {record.key}"))
                self._vacant_since = time.monotonic()
                return True
        self._records_read = True
        return False

    def _observe(self, value: str) -> None:
        leader = Candidate.parse(value)
        name = leader.id if leader is not None else "?"
        if name != self.leader:
            logger.info("standing by: %s leads", name)
            self.leader = name
        self._judged(judge(self.candidate, leader))

    def _judged(self, verdict: Verdict) -> None:
        if verdict == self.verdict:
            return
        if verdict.refused:
            logger.error("%s", verdict.reason)
        elif verdict.reason:
            logger.info("%s", verdict.reason)
        metrics.scope_mismatch.set(int(verdict.standing is Standing.REFUSED))
        metrics.foreign_cluster.set(int(verdict.standing is Standing.FOREIGN))
        self.verdict, self._vacant_since = verdict, None

    def step_down(self, reason: str) -> None:
        if self.fence is None:
            return
        logger.warning("stepping down as leader: %s", reason)
        self.fence, self.leader = None, None
        metrics.leader.set(0)
        metrics.leadership_changes.inc()
        self.outcome.deposed()

    async def resign(self) -> None:
        """Hand over at once (SIGTERM): delete our leader key so a standby need not wait,
        and our election lease with it."""
        fence, lease, self._lease = self.fence, self._lease, None
        self.step_down("resigning")
        try:
            if fence is not None:
                await self.etcd.resign(fence)
            if lease is not None:
                await self.etcd.revoke(lease)
        except EtcdError as exc:  # the key expires with its lease instead
            logger.warning("could not resign at once: %s", exc)


async def _next(changes: AsyncGenerator[WatchEvent, None]) -> WatchEvent:
    return await anext(changes)


class _LeaseLost(Exception):
    """Our election lease is gone, or may be: whatever we believe, we lead no more."""


def leader_key(owner: str) -> str:
    return f"{owner_keys(owner)}leader"
