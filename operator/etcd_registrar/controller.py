"""Controller: keeps the desired keys of every pod and registration, and reconciles by level.

Every event recomputes the desired keys of the object it concerns (O(1) in the number of
pods for a pod event), diffs them against the registry's view and queues the difference. A
periodic sweep re-reads etcd and the pod list and repairs whatever events missed; it deletes
nothing before the first complete view of the pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from etcd_registrar import kube, metrics
from etcd_registrar.kube import Kube
from etcd_registrar.plan import Conflict, plan
from etcd_registrar.registry import Registry, Write
from etcd_registrar.source import (
    Defaults,
    Endpoint,
    PodView,
    Problem,
    Registration,
    desired_for_pod,
)
from etcd_registrar.supervisor import Loop
from etcd_registrar.tenancy import RELEASE_GRACE, Claims, Member

logger = logging.getLogger(__name__)

ServiceId = tuple[str, str]  # (namespace, service)
RegistrationId = tuple[str, str]  # (namespace, name)
SWEEP_SLICE = 1000  # keys planned per step of a sweep, with pod events let in between


@dataclass(frozen=True, slots=True)
class Notice:
    """A Kubernetes Event to post about a pod: (type, reason, message)."""

    type: str
    reason: str
    message: str
    pod: Mapping[str, Any]  # apiVersion/kind/metadata of the pod the event is about


@dataclass(slots=True)
class Outcome:
    """What a pod event led to: Events to post now, and ones to post once etcd has the keys."""

    now: list[Notice] = field(default_factory=list)
    committed: asyncio.Future[None] | None = None
    after_commit: list[Notice] = field(default_factory=list)


def _ref(pod: PodView) -> dict[str, Any]:
    return pod.ref


class Controller:
    def __init__(
        self,
        registry: Registry,
        kube: Kube,
        defaults: Defaults,
        *,
        resync: float = 30.0,
        max_keys_per_namespace: int = 10_000,
        claim_grace: float = RELEASE_GRACE,
    ) -> None:
        self.registry = registry
        self.kube = kube
        self.defaults = defaults
        self.resync = resync
        self.max_keys_per_namespace = max_keys_per_namespace
        registry.on_lease_lost = self._replan
        registry.on_taken = self._replan
        registry.on_refused = self._refused
        # Events found outside a pod event (sweep, lease loss, refused writes): App posts them.
        self.notify: Callable[[list[Notice]], None] = lambda notices: None
        # Who owns each service identity; every change of owner is recorded in etcd.
        self.tenancy = Claims(claim_grace)
        self.interest: dict[str, dict[str, ServiceId]] = {}  # member -> identity -> service
        self.on_claim: Callable[[str, str | None], None] = lambda identity, owner: None
        self.pods: dict[str, PodView] = {}
        self.pods_by_ns: dict[str, set[str]] = {}
        self.claims: dict[str, dict[str, Endpoint]] = {}  # key -> pod uid -> endpoint
        self.keys_by_pod: dict[str, set[str]] = {}
        self.keys_by_service: dict[ServiceId, set[str]] = {}
        self.registrations: dict[tuple[str, str], Registration] = {}  # (namespace, name)
        self.effective: dict[ServiceId, Registration] = {}
        self.conflicts: dict[str, Conflict] = {}
        self.taken: dict[str, Endpoint] = {}  # wanted keys another writer holds
        self.refused: dict[str, str] = {}  # key -> why etcd refused its write
        self.warned: dict[str, dict[str, str]] = {}  # key -> pod uid -> Warning posted
        self.claimed_in_ns: Counter[str] = Counter()  # keys claimed per namespace (quota)
        self.problems: dict[str, tuple[str, ...]] = {}  # pod uid -> last reported problems
        self.view_complete = asyncio.Event()
        self.resumed = asyncio.Event()  # claims and registrations known: pods may render
        self._sweep_now = asyncio.Event()
        # Every replica keeps the desired state warm; only the leader plans and writes it.
        self.leading = True
        self._expected: set[str] | None = None
        self._dirty: set[RegistrationId] = set()
        self._status_sent: dict[RegistrationId, dict[str, Any]] = {}
        self._registration_seen: dict[RegistrationId, float] = {}
        self.loops: list[Loop] = []
        self.last_sweep = time.monotonic()

    # --- pods -------------------------------------------------------------------------------

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> Outcome:
        seen = time.monotonic()
        uid = body["metadata"]["uid"]
        if event_type == "DELETED":
            pod = self._forget_pod(uid)
            self._mark_seen(uid)
            self._present(Member("", uid, ""), {})
            endpoints: list[Endpoint] = []
            problems: list[str] = []
        else:
            pod = PodView.from_body(body)
            self.pods[uid] = pod
            self.pods_by_ns.setdefault(pod.namespace, set()).add(uid)
            self._mark_seen(uid)
            regs = self._regs_in(pod.namespace)
            opted_in = pod.service is not None or pod.annotation_error is not None
            selected = any(r.selects(pod) for r in regs)
            if not (opted_in or selected or uid in self.keys_by_pod or uid in self.interest):
                return Outcome()  # not opted in, nothing held: the common case stays cheap
            wanted, refusals = self._desired(pod, regs)
            endpoints, problems = wanted, [p.message for p in refusals]
        if pod is None:
            return Outcome()
        return self._apply_pod(pod, endpoints, problems, seen)

    def _apply_pod(
        self, pod: PodView, endpoints: list[Endpoint], problems: list[str], seen: float
    ) -> Outcome:
        outcome = Outcome()
        if problems and tuple(problems) != self.problems.get(pod.uid):
            metrics.invalid.labels("pod").inc(len(problems))
            outcome.now += [
                Notice("Warning", "InvalidRegistration", m, _ref(pod)) for m in problems
            ]
        if problems:
            self.problems[pod.uid] = tuple(problems)
        else:
            self.problems.pop(pod.uid, None)
        before = self.keys_by_pod.get(pod.uid, set())
        after = self._claim(pod.uid, endpoints)
        outcome.committed, notices, _ = self._plan_and_submit(before | after, seen)
        outcome.now += notices
        added, removed = len(after - before), len(before - after)
        if added or removed:
            metrics.transitions.labels("register" if added else "deregister").inc()
        for e in endpoints:
            if e.key not in before:
                outcome.after_commit.append(
                    Notice("Normal", "Registered", f"{e.service}: {e.key} = {e.value}", _ref(pod))
                )
        for key in before - after:
            outcome.after_commit.append(
                Notice("Normal", "Deregistered", f"removed {key}", _ref(pod))
            )
        return outcome

    def _desired(
        self, pod: PodView, regs: list[Registration]
    ) -> tuple[list[Endpoint], list[Problem]]:
        """The keys `pod` may hold now: what it wants, in the ranges its namespace may write
        to, within the namespace's quota; and why it gets no more."""
        endpoints, problems, interests = desired_for_pod(pod, regs, self.defaults)
        self._present(
            Member(pod.namespace, pod.uid, pod.created),
            {i: (pod.namespace, s) for i, s in interests.items()},
        )
        return self._within_quota(pod, *self._admitted(pod.namespace, endpoints, problems))

    def _present(self, member: Member, wanted: dict[str, ServiceId]) -> None:
        """`member` wants keys in the ranges `wanted` now: join, leave, claim."""
        before = self.interest.pop(member.id, {})
        for identity in before.keys() - wanted.keys():
            self.tenancy.leave(identity, member.id)
        for identity in wanted.keys() - before.keys():
            if self.tenancy.join(identity, member):
                logger.info("namespace %s claims %s", member.namespace, identity)
                self.on_claim(identity, member.namespace)
        if wanted:
            self.interest[member.id] = wanted

    def _admitted(
        self, namespace: str, endpoints: list[Endpoint], problems: list[Problem]
    ) -> tuple[list[Endpoint], list[Problem]]:
        """The endpoints in ranges `namespace` may write to; the others are refused."""
        kept = [e for e in endpoints if self.tenancy.admits(e.identity, namespace)]
        if len(kept) == len(endpoints):
            return endpoints, problems
        refused = [
            Problem(e.service, self._intrusion(e.service, e.identity, namespace))
            for e in endpoints
            if e not in kept
        ]
        return kept, [*problems, *refused]

    def _intrusion(self, service: str, identity: str, namespace: str) -> str:
        owner = self.tenancy.owner(identity)
        return (
            f"{service}: the keys under {identity} belong to namespace {owner}, so this "
            f"namespace gets none there: ask {owner} to add {namespace} to spec.shareWith of "
            "its ServiceRegistration, or use another service name or prefix"
        )

    def _recompute_identity(self, identity: str) -> None:
        """Re-render every pod and registration that wants keys in `identity` (its owner or
        its shares changed)."""
        services: dict[str, set[ServiceId]] = {}
        for member in list(self.interest.values()):
            if (sid := member.get(identity)) is not None:
                services.setdefault(sid[0], set()).add(sid)
        for namespace, sids in services.items():
            self._recompute(namespace, sids)
            for reg in self._regs_in(namespace):
                self._dirty.add((reg.namespace, reg.name))

    def _within_quota(
        self, pod: PodView, endpoints: list[Endpoint], problems: list[Problem]
    ) -> tuple[list[Endpoint], list[Problem]]:
        """The endpoints that fit the namespace's key quota (keys the pod holds come first)."""
        held = self.keys_by_pod.get(pod.uid, set())
        room = self.max_keys_per_namespace - self.claimed_in_ns[pod.namespace] + len(held)
        if len(endpoints) <= room:
            return endpoints, problems
        kept = sorted(endpoints, key=lambda e: e.key not in held)[: max(room, 0)]
        message = (
            f"namespace {pod.namespace} holds {self.claimed_in_ns[pod.namespace]} keys, the "
            f"limit of this operator (--max-keys-per-namespace "
            f"{self.max_keys_per_namespace}): {len(endpoints) - len(kept)} not registered"
        )
        return kept, [*problems, Problem(None, message)]

    def _claim(self, uid: str, endpoints: Iterable[Endpoint]) -> set[str]:
        """Record the keys pod `uid` wants now; return their set."""
        new = {e.key: e for e in endpoints}
        for key in self.keys_by_pod.get(uid, set()) - new.keys():
            claimants = self.claims.get(key, {})
            gone = claimants.pop(uid, None)
            if gone is not None:
                self.claimed_in_ns[gone.namespace] -= 1
            if not claimants:
                self.claims.pop(key, None)
                if gone is not None:
                    self.keys_by_service.get((gone.namespace, gone.service), set()).discard(key)
        for key, endpoint in new.items():
            claimants = self.claims.setdefault(key, {})
            self.claimed_in_ns[endpoint.namespace] += uid not in claimants
            claimants[uid] = endpoint
            self.keys_by_service.setdefault((endpoint.namespace, endpoint.service), set()).add(key)
            self._dirty_service(endpoint.namespace, endpoint.service)
        if new:
            self.keys_by_pod[uid] = set(new)
        else:
            self.keys_by_pod.pop(uid, None)
        return set(new)

    def _forget_pod(self, uid: str) -> PodView | None:
        pod = self.pods.pop(uid, None)
        if pod is not None:
            self.pods_by_ns.get(pod.namespace, set()).discard(uid)
            self.problems.pop(uid, None)
        return pod

    def _regs_in(self, namespace: str) -> list[Registration]:
        return [r for (ns, _), r in self.effective.items() if ns == namespace]

    # --- planning ---------------------------------------------------------------------------

    def _plan_and_submit(
        self, keys: set[str], seen: float | None = None
    ) -> tuple[asyncio.Future[None], list[Notice], int]:
        """Plan `keys`, queue the changes; return the commit future, new Warnings (each
        posted once per change of a key's conflict state), and the change count."""
        if not self.leading:
            return _done(), [], 0
        result = plan(keys, self.claims, self.registry.current_many(keys))
        warnings: dict[str, dict[str, str]] = {}
        for key in keys:
            self.conflicts.pop(key, None)
            self.taken.pop(key, None)
            if key in self.registry.held:
                self.refused.pop(key, None)
            elif key in self.refused:
                warnings.update(self._refusal_warnings(key))
        for conflict in result.conflicts:
            self.conflicts[conflict.key] = conflict
            win = conflict.winner
            self._dirty_service(win.namespace, win.service)
            for loser in conflict.losers:
                warnings.setdefault(conflict.key, {})[loser.pod_uid] = (
                    f"{loser.service}: key {conflict.key} is already held by the older pod "
                    f"{win.namespace}/{win.pod_name}; this pod is not registered"
                )
        for claim in result.taken:
            self.taken[claim.key] = claim
            self._dirty_service(claim.namespace, claim.service)
            warnings.setdefault(claim.key, {})[claim.pod_uid] = (
                f"{claim.service}: key {claim.key} already exists in etcd and was not written "
                "by etcd-registrar, so it is not overwritten: delete it, or register under "
                "another prefix"
            )
        metrics.conflicts.set(len(self.conflicts) + len(self.taken))
        touched = {(e.namespace, e.service) for e in result.puts} | {
            held.pool[:2] for k in result.deletes if (held := self.registry.held.get(k))
        }
        future = self.registry.submit(result.puts, result.deletes, seen)
        if touched:  # endpoint counts in the status change once etcd has the writes
            future.add_done_callback(lambda _: self._dirty_services(touched))
        notices = self._warn_once(keys, warnings)
        return future, notices, len(result.puts) + len(result.deletes)

    def _warn_once(self, keys: Iterable[str], warnings: dict[str, dict[str, str]]) -> list[Notice]:
        """Warnings for `keys` that differ from the ones last posted (a conflict among 1,000
        replicas is posted once per pod, not once per event of every claimant)."""
        notices: list[Notice] = []
        for key in keys:
            before = self.warned.pop(key, {})
            now = warnings.get(key, {})
            for uid, message in now.items():
                if before.get(uid) != message and (pod := self.pods.get(uid)) is not None:
                    notices.append(Notice("Warning", "Conflict", message, _ref(pod)))
            if now:
                self.warned[key] = now
        return notices

    def _replan(self, keys: set[str]) -> None:
        """Re-plan `keys` from the desired state (a lease was lost, a key found taken)."""
        self.notify(self._plan_and_submit(keys)[1])

    def _refused(self, write: Write, reason: str) -> None:
        """etcd refused `write`: tell its pods and its registration, once."""
        self.refused[write.key] = reason
        self.notify(self._warn_once([write.key], self._refusal_warnings(write.key)))
        for claim in self.claims.get(write.key, {}).values():
            self._dirty_service(claim.namespace, claim.service)

    def _refusal_warnings(self, key: str) -> dict[str, dict[str, str]]:
        reason = self.refused[key]
        return {
            key: {
                uid: f"{claim.service}: key {key} was not written: {reason}"
                for uid, claim in self.claims.get(key, {}).items()
            }
        }

    # --- registrations ----------------------------------------------------------------------

    def on_registration(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body["metadata"]
        ident = (meta["namespace"], meta["name"])
        old = self.registrations.get(ident)
        self._registration_seen[ident] = time.monotonic()
        if event_type == "DELETED":
            self.registrations.pop(ident, None)
            self._status_sent.pop(ident, None)
            self._registration_seen.pop(ident, None)
        else:
            new = Registration.from_body(body, self.defaults)
            if new == old:  # e.g. the echo of our own status patch: no pod changes
                return
            if new.error and (old is None or old.error != new.error):  # once per new error
                metrics.invalid.labels("registration").inc()
            self.registrations[ident] = new
            self._status_sent.setdefault(ident, dict(body.get("status") or {}))
            self._dirty.add(ident)
        services = {(r.namespace, r.service) for r in (old, self.registrations.get(ident)) if r}
        for sid in services:
            self._elect(sid)
        reshared = self._registration_present(ident, old, self.registrations.get(ident))
        self._recompute(ident[0], services)
        for identity in reshared:
            self._recompute_identity(identity)

    def _registration_present(
        self, ident: RegistrationId, old: Registration | None, new: Registration | None
    ) -> set[str]:
        """A registration claims its key range like a pod; the owner's shares follow its
        spec. Returns the ranges whose admitted namespaces changed."""
        member = Member(ident[0], f"registration/{ident[0]}/{ident[1]}", new.created if new else "")
        identity = new.identity if new else None
        self._present(member, {identity: (new.namespace, new.service)} if new and identity else {})
        reshared: set[str] = set()
        for reg in (old, new):
            if reg is not None and reg.identity is not None:
                governing = self.effective.get((reg.namespace, reg.service))
                shares = governing.share_with if governing is not None else frozenset()
                if self.tenancy.share(reg.identity, reg.namespace, shares):
                    reshared.add(reg.identity)
        return reshared

    def _elect(self, sid: ServiceId) -> None:
        """The registration governing a service: valid ones first, then by name.

        An invalid one still governs when it is the only one, so its service's pods get no
        keys (rather than the operator defaults' layout) until the spec is fixed.
        """
        candidates = [r for r in self.registrations.values() if (r.namespace, r.service) == sid]
        ranked = sorted(candidates, key=lambda r: (r.layout is None, r.name))
        if ranked:
            self.effective[sid] = ranked[0]
        else:
            self.effective.pop(sid, None)
        for r in candidates:
            self._dirty.add((r.namespace, r.name))

    def _recompute(self, namespace: str, services: set[ServiceId]) -> None:
        names = {s for _, s in services}
        regs = self._regs_in(namespace)
        keys: set[str] = set()
        for uid in list(self.pods_by_ns.get(namespace, ())):
            pod = self.pods[uid]
            holds = self.keys_by_pod.get(uid, set())
            if pod.service not in names and not holds and not any(r.selects(pod) for r in regs):
                continue
            endpoints, _ = self._desired(pod, regs)
            keys |= holds | self._claim(uid, endpoints)
        for sid in services:
            keys |= self.keys_by_service.get(sid, set())
        if keys:
            self._plan_and_submit(keys)

    def resume(self, claims: Mapping[str, str], bodies: list[dict[str, Any]]) -> None:
        """Start from what etcd and the API server hold: the recorded claims stand; a range
        without a record is claimed by the namespace whose keys it already holds there (a
        tie: the namespace of the oldest registration there); then the registrations."""
        for identity, namespace in claims.items():
            self.tenancy.restore(identity, namespace)
        registrations = [Registration.from_body(b, self.defaults) for b in bodies]
        governing = {(r.namespace, r.service): r for r in registrations if r.layout}
        holders: dict[str, set[str]] = {}
        for key, held in self.registry.held.items():
            namespace, service, _ = held.pool
            reg = governing.get((namespace, service))
            identity = (reg.layout if reg and reg.layout else self.defaults.layout).service_range(
                service, namespace
            )
            if key.startswith(identity) and self.tenancy.owner(identity) is None:
                holders.setdefault(identity, set()).add(namespace)
        for identity, namespaces in holders.items():
            oldest = sorted(
                (r.created, r.namespace)
                for r in registrations
                if r.identity == identity and r.namespace in namespaces
            )
            if len(namespaces) == 1 or oldest:
                owner = oldest[0][1] if oldest else next(iter(namespaces))
                self.tenancy.restore(identity, owner)
                self.on_claim(identity, owner)
        for body in bodies:
            self.on_registration(None, body)
        self.resumed.set()

    async def relist_registrations(self) -> None:
        """Catch up with the API server: registrations deleted while a watch was down are
        forgotten (a relisting watch reports no deletions), unknown ones are learnt."""
        started = time.monotonic()
        bodies = await self.kube.list_registrations()
        listed = {(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in bodies}
        for ident in set(self.registrations) - listed.keys():
            if self._registration_seen.get(ident, 0.0) < started:  # not created since
                namespace, name = ident
                self.on_registration(
                    "DELETED", {"metadata": {"namespace": namespace, "name": name}}
                )
        for ident, body in listed.items():
            if ident not in self.registrations:  # a known one is kept current by its events
                self.on_registration(None, body)

    # --- view completeness and sweep --------------------------------------------------------

    def _mark_seen(self, uid: str) -> None:
        if self._expected is not None:
            self._expected.discard(uid)
            if not self._expected:
                self._expected = None
                self.view_complete.set()
                logger.info("initial view of %d pods complete", len(self.pods))

    async def _await_initial_view(self) -> None:
        """Wait until every pod that existed at start has been seen (or is gone).

        Pods are relisted only while events make no progress on the expected set (to drop
        pods deleted meanwhile): a relist of 10,000 pods costs a second of CPU.
        """
        await self.resumed.wait()  # a sweep before the registrations would delete their keys
        waiting_on = -1
        while not self.view_complete.is_set():
            if self._expected is not None and len(self._expected) < waiting_on:
                waiting_on = len(self._expected)  # events are arriving: just wait for them
                await asyncio.sleep(2)
                continue
            try:
                live = await self.kube.list_pod_uids()
            except Exception as exc:
                logger.warning("listing pods failed (%s); retrying", exc)
                await asyncio.sleep(2)
                continue
            expected = live - self.pods.keys() if self._expected is None else self._expected & live
            if not expected:
                self._expected = None
                self.view_complete.set()
                logger.info("initial view of %d pods complete", len(self.pods))
                break
            self._expected, waiting_on = expected, len(expected)
            await asyncio.sleep(2)

    async def sweep(self) -> int:
        """Repair drift: pods missed by events, keys deleted or changed behind our back.

        Returns how many keys it had to put or delete.
        """
        try:
            await self.relist_registrations()
        except Exception as exc:
            logger.warning("registration relist failed: %s", exc)
        for identity, (old, new) in self.tenancy.lapse(time.monotonic()).items():
            logger.info("claim on %s passes from %s to %s", identity, old, new or "nobody")
            self.on_claim(identity, new)
            self._recompute_identity(identity)
        known = set(self.pods)
        try:
            live = await self.kube.list_pod_uids()
        except Exception as exc:
            logger.warning("pod relist failed: %s", exc)
            live = known
        for uid in known - live:
            pod = self._forget_pod(uid)
            if pod is not None:
                self._apply_pod(pod, [], [], time.monotonic())
        if not self.leading:
            return 0  # a standby keeps its view warm; the leader repairs etcd
        await self.registry.refresh_view(self.claims.keys())
        keys = list(set(self.claims) | set(self.registry.held))
        repaired = 0
        for start in range(0, len(keys), SWEEP_SLICE):
            # Level-triggered, so a slice planned after pod events ran in between is still
            # right; planning 10,000 keys in one go would hold the event loop for ~50 ms.
            _, notices, changed = self._plan_and_submit(set(keys[start : start + SWEEP_SLICE]))
            self.notify(notices)
            repaired += changed
            await asyncio.sleep(0)
        self.mark_all_dirty()
        metrics.sweeps.inc()
        if repaired:
            metrics.drift.inc(repaired)
            logger.info("sweep repaired %d keys", repaired)
        return repaired

    async def _sweep_loop(self) -> None:
        await self._await_initial_view()
        while True:
            self._sweep_now.clear()
            try:
                await self.sweep()
            except Exception:
                metrics.sweep_errors.inc()
                logger.exception("sweep failed")
            self.last_sweep = time.monotonic()  # came round, even if failed (liveness)
            with contextlib.suppress(TimeoutError):  # a new leader sweeps at once
                await asyncio.wait_for(self._sweep_now.wait(), self.resync)

    # --- status -----------------------------------------------------------------------------

    def _dirty_services(self, services: Iterable[ServiceId]) -> None:
        for sid in services:
            self._dirty_service(*sid)

    def _dirty_service(self, namespace: str, service: str) -> None:
        reg = self.effective.get((namespace, service))
        if reg is not None:
            self._dirty.add((reg.namespace, reg.name))

    def status_of(self, ident: tuple[str, str]) -> dict[str, Any]:
        reg = self.registrations[ident]
        keys = self.keys_by_service.get((reg.namespace, reg.service), set())
        held = sum(1 for k in keys if k in self.registry.held)
        governing = self.effective.get((reg.namespace, reg.service))
        conflicts = [self.conflicts[k] for k in keys if k in self.conflicts]
        conditions: list[tuple[str, bool, str, str]] = []
        if reg.error:
            conditions.append(("InvalidSpec", True, "InvalidSpec", reg.error))
        elif governing is not None and governing.name != reg.name:
            conditions.append(
                (
                    "InvalidSpec",
                    True,
                    "Duplicate",
                    f"service {reg.service} is already governed by {governing.name}",
                )
            )
        clashes: list[tuple[str, str]] = []  # one Conflict condition: (reason, message)
        if conflicts:
            c = conflicts[0]
            losers = ", ".join(e.pod_name for e in c.losers)
            clashes.append(
                (
                    "KeyConflict",
                    f"{len(conflicts)} keys claimed by several pods, e.g. {c.key}: "
                    f"{c.winner.pod_name} kept, {losers} refused",
                )
            )
        taken = sorted(k for k in keys if k in self.taken)
        if taken:
            clashes.append(
                (
                    "KeyTaken",
                    f"{len(taken)} keys already exist in etcd, written by another client, and "
                    f"are not overwritten, e.g. {taken[0]}: delete them or use another prefix",
                )
            )
        if reg.identity is not None and not self.tenancy.admits(reg.identity, reg.namespace):
            clashes.insert(
                0, ("NotOwner", self._intrusion(reg.service, reg.identity, reg.namespace))
            )
        if clashes:
            reason = clashes[0][0]
            conditions.append(("Conflict", True, reason, "; ".join(m for _, m in clashes)))
        refused = sorted(k for k in keys if k in self.refused)
        admitted = reg.identity is None or self.tenancy.admits(reg.identity, reg.namespace)
        ready = not reg.error and governing is reg and admitted and held == len(keys)
        pending = len(keys) - held
        if ready:
            message = f"{held} keys held in etcd"
        elif refused:
            message = (
                f"etcd refused {len(refused)} keys, e.g. {refused[0]}: {self.refused[refused[0]]}"
            )
        elif reg.error:
            message = reg.error
        elif governing is not None and governing is not reg:
            message = f"service {reg.service} is governed by {governing.name}; this one is unused"
        else:
            message = f"{pending} of {len(keys)} keys not yet written to etcd"
        conditions.insert(0, ("Ready", ready, "Synced" if ready else "NotSynced", message))
        return {
            "observedGeneration": reg.generation,
            "service": reg.service,
            "format": reg.format,
            "endpoints": held,
            "conditions": self._conditions(ident, conditions, reg.generation),
        }

    def _conditions(
        self, ident: tuple[str, str], wanted: list[tuple[str, bool, str, str]], generation: int
    ) -> list[dict[str, Any]]:
        previous = {c["type"]: c for c in self._status_sent.get(ident, {}).get("conditions") or []}
        now = kube.now()
        out = []
        for ctype, value, reason, message in wanted:
            status = "True" if value else "False"
            old = previous.get(ctype)
            since = old["lastTransitionTime"] if old and old.get("status") == status else now
            out.append(
                {
                    "type": ctype,
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": since,
                    "observedGeneration": generation,
                }
            )
        return out

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not self.leading:
                continue  # the leader writes statuses; ours stay dirty for when we lead
            dirty, self._dirty = self._dirty, set()
            for ident in dirty:
                if ident not in self.registrations:
                    continue
                status = self.status_of(ident)
                if _same_status(status, self._status_sent.get(ident)):
                    continue
                try:
                    await self.kube.patch_registration_status(*ident, status)
                    self._status_sent[ident] = status
                except Exception as exc:
                    if getattr(exc, "status", None) == 404:  # deleted: its event follows
                        continue
                    logger.warning("status update of %s/%s failed: %s", *ident, exc)
                    self._dirty.add(ident)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.loops = [
            Loop("sweep", self._sweep_loop).start(),
            Loop("status", self._status_loop).start(),
        ]

    async def stop(self) -> None:
        for loop in self.loops:
            await loop.stop()

    def promote(self) -> None:
        """Lead: write what the warm view wants, now (a sweep, once the view is complete)."""
        self.leading = True
        for identity, entry in self.tenancy.identities.items():
            self.on_claim(identity, entry.owner)  # the old leader may not have recorded it
        self.mark_all_dirty()
        if self.view_complete.is_set():
            self._sweep_now.set()

    def demote(self) -> None:
        self.leading = False

    def mark_all_dirty(self) -> None:
        self._dirty.update(self.registrations)


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _same_status(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    if not old:
        return False
    return _without_times(new) == _without_times(old)


def _without_times(status: Mapping[str, Any]) -> dict[str, Any]:
    conditions = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions") or []
    ]
    return {**status, "conditions": conditions}
