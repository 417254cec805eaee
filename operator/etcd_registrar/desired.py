"""Desired state: the pods and registrations seen, and the keys each pod should hold. Pure.

Synchronous, with no I/O: an event updates the indices and answers with a `Change`, the keys
to plan again, the registrations whose status may differ and the key ranges it claimed. A
pod event costs O(1) in the number of pods; a registration event re-renders the pods of its
namespace that it may concern.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from etcd_registrar.source import (
    Defaults,
    Endpoint,
    PodView,
    Problem,
    Registration,
    RegistrationId,
    ServiceId,
    assigned_ranges,
    desired_for_pod,
)
from etcd_registrar.tenancy import (
    Blocker,
    ClaimPolicy,
    Claims,
    Handovers,
    Member,
    as_range,
    overlap,
)


@dataclass(slots=True)
class Change:
    """What an event changed: the keys to plan again, the registrations whose status may
    differ now, and the key ranges it claimed (identity -> the namespace that owns it now)."""

    keys: set[str] = field(default_factory=set)
    dirty: set[RegistrationId] = field(default_factory=set)
    claims: dict[str, str] = field(default_factory=dict)
    reshared: set[str] = field(default_factory=set)  # ranges whose owner shares them anew
    # pod uid -> its problems, for pods rendered again whose problems changed (a pod event's
    # own are in PodChange.problems)
    renewed: dict[str, list[str]] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class PodChange(Change):
    """A pod event's change: the pod, the keys it held before and holds now, the endpoints
    it holds, and its problems when they differ from the ones reported last."""

    pod: PodView
    endpoints: list[Endpoint] = field(default_factory=list)
    before: set[str] = field(default_factory=set)
    after: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


class DesiredState:
    def __init__(
        self,
        defaults: Defaults,
        *,
        max_keys_per_namespace: int = 10_000,
        claims: ClaimPolicy | None = None,
    ) -> None:
        self.defaults = defaults
        self.max_keys_per_namespace = max_keys_per_namespace
        # Who owns each service identity (key range).
        self.tenancy = Claims(claims)
        self.interest: dict[str, dict[str, ServiceId]] = {}  # member -> identity -> service
        self.pods: dict[str, PodView] = {}
        self.pods_by_ns: dict[str, set[str]] = {}
        self.claims: dict[str, dict[str, Endpoint]] = {}  # key -> pod uid -> endpoint
        self.keys_by_pod: dict[str, set[str]] = {}
        self.keys_by_service: dict[ServiceId, set[str]] = {}
        self.claimed_in_ns: Counter[str] = Counter()  # keys claimed per namespace (quota)
        self.registrations: dict[RegistrationId, Registration] = {}
        self.governing: dict[ServiceId, Registration] = {}  # the one that governs each service
        self.problems: dict[str, tuple[str, ...]] = {}  # pod uid -> last reported problems

    # --- pods -------------------------------------------------------------------------------

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> PodChange | None:
        """A pod was added, changed or deleted; None: it concerns no key."""
        uid = body["metadata"]["uid"]
        if event_type == "DELETED":
            return self.forget(uid)
        pod = PodView.from_body(body)
        self.pods[uid] = pod
        self.pods_by_ns.setdefault(pod.namespace, set()).add(uid)
        regs = self._regs_in(pod.namespace)
        opted_in = pod.service is not None or pod.annotation_error is not None
        selected = any(r.selects(pod) for r in regs)
        if not (opted_in or selected or uid in self.keys_by_pod or uid in self.interest):
            return None  # not opted in, nothing held: the common case stays cheap
        change = PodChange(pod=pod)
        endpoints, problems = self._desired(pod, regs, change)
        self._settle(change, endpoints, [p.message for p in problems])
        self._enclosed(change)
        return change

    def forget(self, uid: str) -> PodChange | None:
        """Pod `uid` is gone: it holds no keys and wants no range any more (None: it was
        not known)."""
        self._present(Member("", uid, ""), {})  # leaving claims nothing
        pod = self.pods.pop(uid, None)
        if pod is None:
            return None
        self.pods_by_ns.get(pod.namespace, set()).discard(uid)
        self.problems.pop(uid, None)
        return self._settle(PodChange(pod=pod), [], [])

    def _settle(
        self, change: PodChange, endpoints: list[Endpoint], problems: list[str]
    ) -> PodChange:
        """Record what the pod of `change` holds now and the problems it has."""
        pod = change.pod
        if self._note(pod.uid, problems):
            change.problems = problems
        change.endpoints = endpoints
        change.before = self.keys_by_pod.get(pod.uid, set())
        change.after = self._claim(pod.uid, endpoints, change)
        change.keys |= change.before | change.after
        return change

    def _note(self, uid: str, problems: list[str]) -> bool:
        """Record pod `uid`'s problems; True if they are new (to be reported)."""
        new = bool(problems) and tuple(problems) != self.problems.get(uid)
        if problems:
            self.problems[uid] = tuple(problems)
        else:
            self.problems.pop(uid, None)
        return new

    def _desired(
        self, pod: PodView, regs: list[Registration], change: Change
    ) -> tuple[list[Endpoint], list[Problem]]:
        """The keys `pod` may hold now: what it wants, in the ranges its namespace may write
        to, within the namespace's quota; and why it gets no more."""
        endpoints, problems, interests = desired_for_pod(pod, regs, self.defaults)
        change.claims.update(
            self._present(
                Member(pod.namespace, pod.uid, pod.created),
                {i: ServiceId(pod.namespace, s) for i, s in interests.items()},
            )
        )
        return self._within_quota(pod, *self._admitted(pod.namespace, endpoints, problems))

    def _present(self, member: Member, wanted: dict[str, ServiceId]) -> dict[str, str]:
        """`member` wants keys in the ranges `wanted` now: join, leave; return the ranges
        that made its namespace their owner."""
        claimed: dict[str, str] = {}
        before = self.interest.pop(member.id, {})
        for identity in before.keys() - wanted.keys():
            self.tenancy.leave(identity, member.id)
        for identity in wanted.keys() - before.keys():
            if self.tenancy.join(identity, member):
                claimed[identity] = member.namespace
        if wanted:
            self.interest[member.id] = wanted
        return claimed

    def _admitted(
        self, namespace: str, endpoints: list[Endpoint], problems: list[Problem]
    ) -> tuple[list[Endpoint], list[Problem]]:
        """The endpoints in ranges `namespace` may write to; the others are refused."""
        kept: list[Endpoint] = []
        refused: list[Problem] = []
        for e in endpoints:
            blocker = self.tenancy.blocker(e.identity, namespace) or self.tenancy.key_blocker(
                e.key, namespace
            )
            if blocker is None:
                kept.append(e)
            else:
                refused.append(
                    Problem(e.service, _refusal(e.service, e.identity, namespace, blocker))
                )
        return kept, [*problems, *refused]

    def intrusion(self, service: str, identity: str, namespace: str) -> str | None:
        """Why `namespace` gets no keys of `service` in the range `identity` (None: it may)."""
        if (blocker := self.tenancy.blocker(identity, namespace)) is not None:
            return _refusal(service, identity, namespace, blocker)
        if unclaimable := self.tenancy.unclaimable(identity, namespace):
            return f"{service}: no keys under {identity}: {unclaimable}"
        return None

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

    def _claim(self, uid: str, endpoints: Iterable[Endpoint], change: Change) -> set[str]:
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
                    self.keys_by_service.get(gone.service_id, set()).discard(key)
        for key, endpoint in new.items():
            claimants = self.claims.setdefault(key, {})
            self.claimed_in_ns[endpoint.namespace] += uid not in claimants
            claimants[uid] = endpoint
            self.keys_by_service.setdefault(endpoint.service_id, set()).add(key)
        change.dirty |= self.governing_ids(e.service_id for e in new.values())
        if new:
            self.keys_by_pod[uid] = set(new)
        else:
            self.keys_by_pod.pop(uid, None)
        return set(new)

    def _regs_in(self, namespace: str) -> list[Registration]:
        return [r for sid, r in self.governing.items() if sid.namespace == namespace]

    def governing_ids(self, services: Iterable[ServiceId]) -> set[RegistrationId]:
        """The registrations that govern `services` (whose status reports their keys)."""
        return {r.id for sid in services if (r := self.governing.get(sid)) is not None}

    # --- registrations ----------------------------------------------------------------------

    def on_registration(self, event_type: str | None, body: Mapping[str, Any]) -> Change | None:
        """A registration was added, changed or deleted; None: nothing changed (e.g. the
        echo of a status patch), so no pod is rendered again."""
        meta = body["metadata"]
        ident = RegistrationId(meta["namespace"], meta["name"])
        old = self.registrations.get(ident)
        change = Change()
        if event_type == "DELETED":
            self.registrations.pop(ident, None)
        else:
            new = Registration.from_body(body, self.defaults)
            if new == old:
                return None
            self.registrations[ident] = new
            change.dirty.add(ident)
        current = self.registrations.get(ident)
        services = {r.service_id for r in (old, current) if r}
        for sid in services:
            self._elect(sid, change)
        reshared = self._registration_present(ident, old, current, change)
        change.reshared |= reshared
        self._recompute(ident.namespace, services, change)
        for identity in reshared:
            self._recompute_identity(identity, change)
        self._enclosed(change)
        return change

    def _registration_present(
        self,
        ident: RegistrationId,
        old: Registration | None,
        new: Registration | None,
        change: Change,
    ) -> set[str]:
        """A registration claims its key range like a pod; the owner's shares follow its
        spec. Returns the ranges whose admitted namespaces changed."""
        member_id = f"registration/{ident.namespace}/{ident.name}"
        member = Member(ident.namespace, member_id, new.created if new else "")
        identity = new.identity if new else None
        wanted = {identity: new.service_id} if new and identity else {}
        change.claims.update(self._present(member, wanted))
        reshared: set[str] = set()
        for reg in (old, new):
            if reg is not None and reg.identity is not None:
                governing = self.governing.get(reg.service_id)
                shares = governing.share_with if governing is not None else frozenset()
                if self.tenancy.share(reg.identity, reg.namespace, shares):
                    reshared.add(reg.identity)
        return reshared

    def _elect(self, sid: ServiceId, change: Change) -> None:
        """The registration governing a service: valid ones first, then by name.

        An invalid one still governs when it is the only one, so its service's pods get no
        keys (rather than the operator defaults' layout) until the spec is fixed.
        """
        candidates = [r for r in self.registrations.values() if r.service_id == sid]
        ranked = sorted(candidates, key=lambda r: (r.layout is None, r.name))
        if ranked:
            self.governing[sid] = ranked[0]
        else:
            self.governing.pop(sid, None)
        change.dirty |= {r.id for r in candidates}

    def _recompute(self, namespace: str, services: set[ServiceId], change: Change) -> None:
        """Re-render the pods of `namespace` that `services` may concern."""
        names = {sid.service for sid in services}
        regs = self._regs_in(namespace)
        for uid in list(self.pods_by_ns.get(namespace, ())):
            pod = self.pods[uid]
            holds = self.keys_by_pod.get(uid, set())
            if pod.service not in names and not holds and not any(r.selects(pod) for r in regs):
                continue
            endpoints, problems = self._desired(pod, regs, change)
            messages = [p.message for p in problems]
            if self._note(uid, messages):
                change.renewed[uid] = messages
            change.keys |= holds | self._claim(uid, endpoints, change)
        for sid in services:
            change.keys |= self.keys_by_service.get(sid, set())

    # --- tenancy ----------------------------------------------------------------------------

    def on_namespace(self, body: Mapping[str, Any]) -> tuple[Handovers, list[str]]:
        """A Namespace was seen: the ranges an administrator assigned to it now stand. Returns
        the claims that changed hands (each to be `reclaimed`), and what was wrong with its
        annotation."""
        ranges, errors = assigned_ranges(body, self.defaults)
        return self.tenancy.assign(body["metadata"]["name"], ranges), errors

    def reclaimed(self, identity: str) -> Change:
        """The owner of `identity` changed: the heir's own registration shares it at once,
        and whoever wants keys in a range overlapping it is rendered again."""
        change = Change()
        owner = self.tenancy.owner(identity)
        for reg in self.governing.values():
            mine = owner is not None and reg.namespace == owner and reg.identity == identity
            if mine and self.tenancy.share(identity, reg.namespace, reg.share_with):
                change.reshared.add(identity)
        self._recompute_identity(identity, change)
        return change

    def _recompute_identity(self, identity: str, change: Change, but: str | None = None) -> None:
        """Re-render every pod and registration that wants keys in a range overlapping
        `identity` (its owner or its shares changed), those of namespace `but` aside."""
        changed = as_range(identity)
        services: dict[str, set[ServiceId]] = {}
        for member in list(self.interest.values()):
            for wanted, sid in member.items():
                if sid.namespace != but and overlap(as_range(wanted), changed):
                    services.setdefault(sid.namespace, set()).add(sid)
        for namespace, sids in services.items():
            self._recompute(namespace, sids, change)
            change.dirty |= {r.id for r in self._regs_in(namespace)}

    def _enclosed(self, change: Change) -> None:
        """A range claimed now may enclose keys other namespaces hold (admitted earlier into
        a wider or a shared range): render those again, so that none stays inside it."""
        done: set[str] = set()
        while todo := change.claims.keys() - done:
            identity = todo.pop()
            done.add(identity)
            self._recompute_identity(identity, change, but=change.claims[identity])

    def restore(
        self,
        recorded: Mapping[str, str],
        bodies: Iterable[Mapping[str, Any]],
        held: Iterable[tuple[str, ServiceId]],
    ) -> dict[str, str]:
        """Start from what etcd and the API server hold: the `recorded` claims stand; a range
        without a record is claimed by the namespace whose `held` keys (key, service) it
        already holds there (a tie: the namespace of the oldest registration there, of
        `bodies`). Returns the claims derived so (identity -> owner), to be recorded."""
        for identity, namespace in recorded.items():
            self.tenancy.restore(identity, namespace)
        registrations = [Registration.from_body(b, self.defaults) for b in bodies]
        governing = {r.service_id: r for r in registrations if r.layout}
        holders: dict[str, set[str]] = {}
        for key, sid in held:
            reg = governing.get(sid)
            layout = reg.layout if reg and reg.layout else self.defaults.layout
            identity = layout.service_range(sid.service, sid.namespace)
            if (
                key.startswith(identity)
                and self.tenancy.owner(identity) is None
                and self.tenancy.admits(identity, sid.namespace)
            ):
                holders.setdefault(identity, set()).add(sid.namespace)
        derived: dict[str, str] = {}
        for identity, namespaces in holders.items():
            oldest = sorted(
                (r.created, r.namespace)
                for r in registrations
                if r.identity == identity and r.namespace in namespaces
            )
            if len(namespaces) == 1 or oldest:
                derived[identity] = oldest[0][1] if oldest else next(iter(namespaces))
                self.tenancy.restore(identity, derived[identity])
        return derived


def _refusal(service: str, identity: str, namespace: str, blocker: Blocker) -> str:
    """Why `namespace` gets no keys of `service` under `identity`: both ranges and the owner."""
    where = (
        f"the keys under {identity}"
        if blocker.range == identity
        else f"its keys under {identity} overlap the range {blocker.range}, and the keys there"
    )
    owner = blocker.owner
    if blocker.elsewhere:
        owner += f" (owner id {blocker.elsewhere}, another operator sharing this etcd)"
    return (
        f"{service}: {where} belong to namespace {owner}, so this namespace gets none "
        f"there: ask {blocker.owner} to add {namespace} to spec.shareWith of its "
        "ServiceRegistration, or use another service name, prefix or key template"
    )
