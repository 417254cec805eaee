"""Controller: joins the desired state, the registry and the status writer, by level.

Every event updates the desired state (`desired.DesiredState`, O(1) in the number of pods
for a pod event), which names the keys it changed; those are planned against the registry's
view and the difference is queued. A periodic sweep re-reads etcd and the pod list and
repairs whatever events missed; it deletes nothing before the first complete view of the
pods. Statuses are written by `status.StatusWriter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from etcd_registrar import metrics
from etcd_registrar.desired import Change, DesiredState, PodChange
from etcd_registrar.kube import Kube
from etcd_registrar.plan import Conflict, plan
from etcd_registrar.port import EtcdPort
from etcd_registrar.readiness import GATE_DISABLED
from etcd_registrar.registry import Registry
from etcd_registrar.source import Defaults, Endpoint, PodView, RegistrationId
from etcd_registrar.status import Findings, StatusWriter
from etcd_registrar.supervisor import Backoff, Loop
from etcd_registrar.tenancy import ASSIGNMENT, ClaimPolicy, Handovers, Remote
from etcd_registrar.term import Term
from etcd_registrar.writer import Write

logger = logging.getLogger(__name__)

SWEEP_SLICE = 1000  # keys planned per step of a sweep, with pod events let in between
VIEW_POLL = 2.0  # seconds between looks at the initial view's progress (a relist costs CPU)
# The pod watch reports the deletions a relist (410 Gone) finds (on_listed), so the sweep's
# own list of pod UIDs only guards against an event lost in other ways: it runs every
# POD_RELIST_SWEEPS-th sweep. At 1,000 pods it was most of an idle replica's CPU (py-spy:
# decoding ~2 MB of metadata, managedFields mostly, per sweep).
POD_RELIST_SWEEPS = 10


@dataclass(frozen=True, slots=True)
class Notice:
    """A Kubernetes Event to post about a pod: (type, reason, message)."""

    type: str
    reason: str
    message: str
    pod: Mapping[str, Any]  # apiVersion/kind/metadata of the pod the event is about

    @property
    def namespace(self) -> str:
        namespace: str = self.pod["metadata"]["namespace"]
        return namespace

    @property
    def key(self) -> tuple[str, str, str]:
        """What tells two notices apart: the pod's uid, the reason and the message."""
        return (self.pod["metadata"]["uid"], self.reason, self.message)


class Submitted(NamedTuple):
    """What planning some keys queued."""

    committed: asyncio.Future[None]  # resolves once etcd has the changes
    warnings: list[Notice]  # each posted once per change of a key's conflict state
    changes: int  # puts and deletes queued


@dataclass(slots=True)
class Outcome:
    """What a pod event led to: Events to post now, and ones to post once etcd has the keys."""

    now: list[Notice] = field(default_factory=list)
    committed: asyncio.Future[None] | None = None
    after_commit: list[Notice] = field(default_factory=list)


class Poster(Protocol):
    """Where the Events found outside a pod event go (events.EventPoster)."""

    def post(self, notices: list[Notice]) -> None: ...

    def repost(self, current: Iterable[Notice]) -> None:
        """After a sweep, with every Warning whose cause holds: the dropped ones go again."""


class ClaimRecorder(Protocol):
    """Where every change of the owner of a service identity is recorded (claimstore)."""

    def record(
        self, identity: str, owner: str | None, shared: frozenset[str] = frozenset()
    ) -> None: ...


class Reachability(Protocol):
    """The latest etcd reachability check's answer (health.EtcdCheck)."""

    @property
    def reachable(self) -> bool: ...


class Controller:
    """Plans what the desired state wants against its registry; sweeps; leads or stands by.
    The registry's setbacks (keys lost with a lease, taken, refused) come back to it."""

    def __init__(
        self,
        etcd: EtcdPort,
        kube: Kube,
        defaults: Defaults,
        term: Term,
        *,
        events: Poster,
        claims: ClaimRecorder,
        etcd_check: Reachability,
        owner: str = "default",
        cluster: str = "",
        resync: float = 30.0,
        max_keys_per_namespace: int = 10_000,
        policy: ClaimPolicy | None = None,
        readiness_gate: bool = True,
    ) -> None:
        self.registry = Registry(etcd, term, self, owner=owner, cluster=cluster)
        self.kube = kube
        # Every replica keeps the desired state warm; only the leader plans and writes it.
        self.term = term
        self.events, self.claims, self.etcd_check = events, claims, etcd_check
        self.resync = resync
        self.readiness_gate = readiness_gate  # disabled: gated pods are warned of it
        self.state = DesiredState(
            defaults, max_keys_per_namespace=max_keys_per_namespace, claims=policy
        )
        self.conflicts: dict[str, Conflict] = {}
        self.taken: dict[str, Endpoint] = {}  # wanted keys another writer holds
        self.refused: dict[str, str] = {}  # key -> why etcd refused its write
        self.warned: dict[str, dict[str, str]] = {}  # key -> pod uid -> Warning posted
        self.untold: set[str] = set()  # pods whose problems changed while a standby
        self.statuses = StatusWriter(self.state, kube, self._findings, term)
        self.view_complete = asyncio.Event()
        self.resumed = asyncio.Event()  # claims and registrations known: pods may render
        self._sweep_now = asyncio.Event()
        self._expected: set[str] | None = None
        self._registration_seen: dict[RegistrationId, float] = {}
        self.loops: list[Loop] = []
        self.last_sweep = time.monotonic()
        self._sweeps = 0  # started, for POD_RELIST_SWEEPS

    def _findings(self) -> Findings:
        return Findings(
            self.registry.held, self.conflicts, self.taken, self.refused, self.etcd_check.reachable
        )

    # --- events -----------------------------------------------------------------------------

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> Outcome:
        seen = time.monotonic()
        change = self.state.on_pod(event_type, body)
        uid = body["metadata"]["uid"]
        self._mark_seen(uid)
        if event_type == "DELETED":
            self.untold.discard(uid)
        if change is None:
            return Outcome()
        if change.problems and not self.term.leading:
            self.untold.add(uid)  # its Warning goes out when this replica leads
        return self._apply_pod(change, seen)

    def _apply_pod(self, change: PodChange, seen: float) -> Outcome:
        """Plan a pod's change; its Events: problems and conflicts now, the keys it gained
        or lost once etcd has them."""
        ref = change.pod.ref
        outcome = Outcome()
        if change.problems:
            metrics.invalid.labels("pod").inc(len(change.problems))
            outcome.now += [
                Notice("Warning", "InvalidRegistration", m, ref) for m in change.problems
            ]
        self._record(change)
        submitted = self._plan_and_submit(change.keys, seen)
        outcome.committed = submitted.committed
        outcome.now += submitted.warnings
        added, removed = change.after - change.before, change.before - change.after
        if added or removed:
            metrics.transitions.labels("register" if added else "deregister").inc()
        for e in change.endpoints:
            if e.key not in change.before:
                outcome.after_commit.append(
                    Notice("Normal", "Registered", f"{e.service}: {e.key} = {e.value}", ref)
                )
        for key in removed:
            outcome.after_commit.append(Notice("Normal", "Deregistered", f"removed {key}", ref))
        return outcome

    def on_registration(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        ident = RegistrationId(meta["namespace"], meta["name"])
        old = self.state.registrations.get(ident)
        self._registration_seen[ident] = time.monotonic()
        if event_type == "DELETED":
            self._registration_seen.pop(ident, None)
            self.statuses.forget(ident)
        change = self.state.on_registration(event_type, body)
        if change is None:  # e.g. the echo of our own status patch: no pod changes
            return
        new = self.state.registrations.get(ident)
        if new is not None:
            if new.error and (old is None or old.error != new.error):  # once per new error
                metrics.invalid.labels("registration").inc()
            self.statuses.seen(ident, body.get("status"))
        self._apply(change)

    def on_namespace(self, body: Mapping[str, Any]) -> None:
        """A Namespace was seen: the claims its administrator's assignment moves change hands."""
        handovers, errors = self.state.on_namespace(body)
        for error in errors:
            logger.warning(
                "namespace %s: annotation %s: %s skipped",
                body["metadata"]["name"],
                ASSIGNMENT,
                error,
            )
        self._hand_over(handovers)

    def on_remote_claim(self, owner_id: str, identity: str, claim: Remote | None) -> None:
        """Another cluster sharing the etcd recorded (None: released) a claim."""
        self._hand_over(self.state.tenancy.remote_claim(owner_id, identity, claim))

    def on_recorded(self, identity: str, revision: int | None) -> None:
        """Our record of a claim was written (its create revision) or deleted."""
        self._hand_over(self.state.tenancy.recorded(identity, revision))

    def _claimed(self, identity: str, owner: str | None) -> None:
        """Record the owner of `identity` in etcd, with whom it shares the range."""
        entry = self.state.tenancy.identities.get(identity)
        shared = entry.shared_with if entry is not None and owner is not None else frozenset()
        self.claims.record(identity, owner, shared)

    def _hand_over(self, handovers: Handovers) -> None:
        """Record the claims that changed hands; render whoever wants keys around them."""
        for identity, (old, new) in handovers.items():
            logger.info("claim on %s passes from %s to %s", identity, old, new or "nobody")
            self._claimed(identity, new)
            self._apply(self.state.reclaimed(identity))

    def _record(self, change: Change) -> None:
        """Record the claims `change` made; mark the statuses it may have changed."""
        for identity, namespace in change.claims.items():
            logger.info("namespace %s claims %s", namespace, identity)
            self._claimed(identity, namespace)
        for identity in change.reshared - change.claims.keys():
            self._claimed(identity, self.state.tenancy.owner(identity))
        self.statuses.mark(change.dirty)

    def _apply(self, change: Change) -> None:
        """Apply a change found outside a pod event; its Warnings are posted: the pods'
        new problems (the leader's), then what planning found."""
        self._record(change)
        if self.term.leading and change.renewed:
            self.events.post(
                [
                    Notice("Warning", "InvalidRegistration", message, self.state.pods[uid].ref)
                    for uid, messages in change.renewed.items()
                    for message in messages
                ]
            )
        if change.keys:
            self.events.post(self._plan_and_submit(change.keys).warnings)

    # --- planning ---------------------------------------------------------------------------

    def _plan_and_submit(self, keys: set[str], seen: float | None = None) -> Submitted:
        """Plan `keys` and queue the changes."""
        if not self.term.leading:
            return Submitted(_done(), [], 0)
        result = plan(keys, self.state.claims, self.registry.current_many(keys))
        warnings: dict[str, dict[str, str]] = {}
        for key in keys:
            self.conflicts.pop(key, None)
            self.taken.pop(key, None)
            if key in self.registry.held or key not in self.state.claims:
                self.refused.pop(key, None)  # written since, or no pod wants it any more
            elif key in self.refused:
                warnings.update(self._refusal_warnings(key))
        for conflict in result.conflicts:
            self.conflicts[conflict.key] = conflict
            win = conflict.winner
            self.statuses.mark_services([win.service_id])
            for loser in conflict.losers:
                warnings.setdefault(conflict.key, {})[loser.pod_uid] = (
                    f"{loser.service}: key {conflict.key} is already held by the older pod "
                    f"{win.namespace}/{win.pod_name}; this pod is not registered"
                )
        for claim in result.taken:
            self.taken[claim.key] = claim
            self.statuses.mark_services([claim.service_id])
            warnings.setdefault(claim.key, {})[claim.pod_uid] = (
                f"{claim.service}: key {claim.key} already exists in etcd and was not written "
                "by etcd-registrar, so it is not overwritten: delete it, or register under "
                "another prefix"
            )
        metrics.conflicts.set(len(self.conflicts) + len(self.taken))
        touched = {e.service_id for e in result.puts} | {
            held.pool.service_id for k in result.deletes if (held := self.registry.held.get(k))
        }
        future = self.registry.submit(result.puts, result.deletes, seen)
        if touched:  # endpoint counts in the status change once etcd has the writes
            future.add_done_callback(lambda _: self.statuses.mark_services(touched))
        notices = self._warn_once(keys, warnings)
        return Submitted(future, notices, len(result.puts) + len(result.deletes))

    def _warn_once(self, keys: Iterable[str], warnings: dict[str, dict[str, str]]) -> list[Notice]:
        """Warnings for `keys` that differ from the ones last posted (a conflict among 1,000
        replicas is posted once per pod, not once per event of every claimant)."""
        notices: list[Notice] = []
        for key in keys:
            before = self.warned.pop(key, {})
            now = warnings.get(key, {})
            for uid, message in now.items():
                if before.get(uid) != message and (pod := self.state.pods.get(uid)) is not None:
                    notices.append(Notice("Warning", "Conflict", message, pod.ref))
            if now:
                self.warned[key] = now
        return notices

    def warnings(self) -> list[Notice]:
        """Every Warning whose cause holds now: the pods' problems, and the conflicts and
        the keys taken or refused that their pods were warned of."""
        pods = self.state.pods
        notices = [
            Notice("Warning", "InvalidRegistration", message, pods[uid].ref)
            for uid, problems in self.state.problems.items()
            if uid in pods
            for message in problems
        ]
        notices += [
            Notice("Warning", "Conflict", message, pods[uid].ref)
            for warned in self.warned.values()
            for uid, message in warned.items()
            if uid in pods
        ]
        if not self.readiness_gate:
            notices += [gate_disabled(pod) for pod in pods.values() if pod.state.gated]
        return notices

    # --- the registry's setbacks (registry.Setbacks) ----------------------------------------

    def lease_lost(self, keys: set[str]) -> None:
        """Re-plan `keys` from the desired state: their lease is gone."""
        self.events.post(self._plan_and_submit(keys).warnings)

    def found_taken(self, keys: set[str]) -> None:
        """Re-plan `keys`: another writer holds them (its pods are warned)."""
        self.events.post(self._plan_and_submit(keys).warnings)

    def write_refused(self, write: Write, reason: str) -> None:
        """etcd refused `write`: tell its pods and its registration, once."""
        self.refused[write.key] = reason
        self.events.post(self._warn_once([write.key], self._refusal_warnings(write.key)))
        self.statuses.mark_services(
            c.service_id for c in self.state.claims.get(write.key, {}).values()
        )

    def _refusal_warnings(self, key: str) -> dict[str, dict[str, str]]:
        reason = self.refused[key]
        return {
            key: {
                uid: f"{claim.service}: key {key} was not written: {reason}"
                for uid, claim in self.state.claims.get(key, {}).items()
            }
        }

    # --- registrations ----------------------------------------------------------------------

    def resume(self, claims: Mapping[str, str], bodies: list[dict[str, Any]]) -> None:
        """Start from what etcd and the API server hold: the recorded claims, the ones the
        held keys imply (recorded now), then the registrations."""
        held = ((key, h.pool.service_id) for key, h in self.registry.held.items())
        for identity, owner in self.state.restore(claims, bodies, held).items():
            self._claimed(identity, owner)
        for body in bodies:
            self.on_registration(None, body)
        self.resumed.set()

    async def relist_registrations(self) -> None:
        """Catch up with the API server: registrations deleted while a watch was down are
        forgotten (a relisting watch reports no deletions), unknown ones are learnt."""
        started = time.monotonic()
        bodies = await self.kube.list_registrations()
        listed = {
            RegistrationId(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in bodies
        }
        for ident in set(self.state.registrations) - listed.keys():
            if self._registration_seen.get(ident, 0.0) < started:  # not created since
                self.on_registration(
                    "DELETED", {"metadata": {"namespace": ident.namespace, "name": ident.name}}
                )
        for ident, body in listed.items():
            if ident not in self.state.registrations:  # a known one is kept current by its events
                self.on_registration(None, body)

    # --- view completeness and sweep --------------------------------------------------------

    def _mark_seen(self, uid: str) -> None:
        if self._expected is not None:
            self._expected.discard(uid)
            if not self._expected:
                self._expected = None
                self.view_complete.set()
                logger.info("initial view of %d pods complete", len(self.state.pods))

    async def _await_initial_view(self) -> None:
        """Wait until every pod that existed at start has been seen (or is gone).

        Pods are relisted only while events make no progress on the expected set (to drop
        pods deleted meanwhile): a relist of 10,000 pods costs a second of CPU.
        """
        await self.resumed.wait()  # a sweep before the registrations would delete their keys
        waiting_on = -1
        backoff = Backoff(cap=VIEW_POLL)
        while not self.view_complete.is_set():
            if self._expected is not None and len(self._expected) < waiting_on:
                waiting_on = len(self._expected)  # events are arriving: just wait for them
                await asyncio.sleep(VIEW_POLL)
                continue
            try:
                live = await self.kube.list_pod_uids()
            except Exception as exc:
                logger.warning("listing pods failed (%s); retrying", exc)
                await backoff.sleep()
                continue
            backoff.reset()
            expected = (
                live - self.state.pods.keys() if self._expected is None else self._expected & live
            )
            if not expected:
                self._expected = None
                self.view_complete.set()
                logger.info("initial view of %d pods complete", len(self.state.pods))
                break
            self._expected, waiting_on = expected, len(expected)
            await asyncio.sleep(VIEW_POLL)

    async def sweep(self) -> int:
        """Repair drift: pods missed by events, keys deleted or changed behind our back.

        Returns how many keys it had to put or delete.
        """
        try:
            await self.relist_registrations()
        except Exception as exc:
            logger.warning("registration relist failed: %s", exc)
        self._hand_over(self.state.tenancy.lapse(time.monotonic()))
        if self._sweeps % POD_RELIST_SWEEPS == 0:
            known = set(self.state.pods)
            try:
                self._forget(known - await self.kube.list_pod_uids())
            except Exception as exc:
                logger.warning("pod relist failed: %s", exc)
        self._sweeps += 1
        if not self.term.leading:
            return 0  # a standby keeps its view warm; the leader repairs etcd
        await self.registry.refresh_view(self.state.claims.keys())
        keys = list(set(self.state.claims) | set(self.registry.held))
        repaired = 0
        for start in range(0, len(keys), SWEEP_SLICE):
            # Level-triggered, so a slice planned after pod events ran in between is still
            # right; planning 10,000 keys in one go would hold the event loop for ~50 ms.
            submitted = self._plan_and_submit(set(keys[start : start + SWEEP_SLICE]))
            self.events.post(submitted.warnings)
            repaired += submitted.changes
            await asyncio.sleep(0)
        self.mark_all_dirty()
        self.events.repost(self.warnings())
        metrics.sweeps.inc()
        if repaired:
            metrics.drift.inc(repaired)
            logger.info("sweep repaired %d keys", repaired)
        return repaired

    def on_listed(self, namespace: str | None, uids: set[str]) -> None:
        """The pod watch listed `namespace` (None: all) afresh: its pods not in `uids` are
        gone (deleted while no watch ran, e.g. before a 410 Gone)."""
        pods = self.state.pods
        scope = pods if namespace is None else self.state.pods_by_ns.get(namespace, set())
        self._forget({uid for uid in scope if uid in pods} - uids)

    def _forget(self, gone: set[str]) -> None:
        for uid in gone:
            if (change := self.state.forget(uid)) is not None:
                self._apply_pod(change, time.monotonic())

    async def _sweep_loop(self) -> None:
        await self._await_initial_view()
        while True:
            self._sweep_now.clear()
            started = time.monotonic()
            try:
                await self.sweep()
            except Exception:
                metrics.sweep_errors.inc()
                logger.exception("sweep failed")
            metrics.sweep_seconds.inc(time.monotonic() - started)
            self.last_sweep = time.monotonic()  # came round, even if failed (liveness)
            with contextlib.suppress(TimeoutError):  # a new leader sweeps at once
                await asyncio.wait_for(self._sweep_now.wait(), self.resync)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.loops = [
            Loop("sweep", self._sweep_loop).start(),
            Loop("status", self.statuses.run).start(),
        ]

    async def stop(self) -> None:
        for loop in self.loops:
            await loop.stop()

    def took_over(self) -> None:
        """The term began: write what the warm view wants, now (a sweep, once the view is
        complete)."""
        for identity, entry in self.state.tenancy.identities.items():
            if entry.owner is not None:
                self._claimed(identity, entry.owner)  # the old leader may not have recorded it
        self.events.post(self._untold_problems())
        self.mark_all_dirty()
        if self.view_complete.is_set():
            self._sweep_now.set()

    def _untold_problems(self) -> list[Notice]:
        """The Warnings of the pods whose problems changed while this replica stood by and
        still stand: a leader that took over tells them (the old one may not have, e.g. when
        this replica started alone and its first pods came before its election)."""
        notices = [
            Notice("Warning", "InvalidRegistration", message, self.state.pods[uid].ref)
            for uid in self.untold
            for message in self.state.problems.get(uid, ())
        ]
        self.untold.clear()
        return notices

    def mark_all_dirty(self) -> None:
        self.statuses.mark(self.state.registrations)


def gate_disabled(pod: PodView) -> Notice:
    """The Warning of a pod that waits on the readiness gate while it is disabled."""
    return Notice("Warning", "ReadinessGateDisabled", GATE_DISABLED, pod.ref)


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
