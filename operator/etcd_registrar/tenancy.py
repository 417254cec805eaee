"""Tenancy: which namespace may publish into which key range. Pure: no I/O, no clock.

A service identity is the key range one (format, prefix, service) renders into: the key
up to its first per-pod field (``/services/payments/``). Consumers read a whole range, so
whoever may put one key there may send them traffic. The first namespace that registers into
an identity claims it (like OpenShift's route admission and consul-k8s' catalog sync); other
namespaces get no keys there unless the owner shares it (``spec.shareWith``). The claim holds
while the owner has a registration or a pod for the identity, and lapses `grace` seconds
after its last one is gone, so a rollout or a re-created registration does not lose it.

Operator policy confines every key to the allowed prefixes, and never lets one under the
operator's own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from etcd_registrar.formats import is_reserved

RELEASE_GRACE = 60.0  # seconds a claim outlives its owner's last registration or pod


def within(key_or_prefix: str, allowed: Iterable[str]) -> bool:
    """True if `key_or_prefix` lies under one of the `allowed` prefixes (whole segments:
    /services allows /services/x, not /servicesx) and not under the bookkeeping prefix.
    No allowed prefixes: anywhere but the bookkeeping."""
    if is_reserved(key_or_prefix):
        return False
    prefixes = list(allowed)
    return not prefixes or any(
        key_or_prefix == p or key_or_prefix.startswith(p.rstrip("/") + "/") for p in prefixes
    )


@dataclass(frozen=True, slots=True)
class Member:
    """A registration or pod of `namespace` that wants keys in an identity."""

    namespace: str
    id: str  # pod uid or "registration/<name>"
    created: str  # RFC 3339: the older member wins a claim nobody holds


@dataclass(slots=True)
class Identity:
    owner: str | None = None
    members: dict[str, Member] = field(default_factory=dict)  # member id -> member
    shared_with: frozenset[str] = frozenset()
    ownerless_since: float | None = None  # owner present no more, at this time


class Claims:
    """The owner of every identity seen, and who wants in."""

    def __init__(self, grace: float = RELEASE_GRACE) -> None:
        self.grace = grace
        self.identities: dict[str, Identity] = {}

    def owner(self, identity: str) -> str | None:
        entry = self.identities.get(identity)
        return entry.owner if entry else None

    def admits(self, identity: str, namespace: str) -> bool:
        entry = self.identities.get(identity)
        return entry is None or entry.owner in (None, namespace) or namespace in entry.shared_with

    def restore(self, identity: str, namespace: str) -> None:
        """An owner recorded earlier (etcd, or keys already held): it stands until it lapses."""
        self.identities.setdefault(identity, Identity()).owner = namespace

    def join(self, identity: str, member: Member) -> bool:
        """`member` wants keys in `identity`; True if that made its namespace the owner."""
        entry = self.identities.setdefault(identity, Identity())
        entry.members[member.id] = member
        if entry.owner == member.namespace:
            entry.ownerless_since = None
            return False
        if entry.owner is None:
            entry.owner, entry.ownerless_since = member.namespace, None
            return True
        return False

    def leave(self, identity: str, member_id: str) -> None:
        """`member_id` wants no keys in `identity` any more (its grace starts at `lapse`)."""
        entry = self.identities.get(identity)
        if entry is not None:
            entry.members.pop(member_id, None)

    def share(self, identity: str, namespace: str, with_: Iterable[str]) -> bool:
        """The owner's registration admits `with_`; True if that changed who is admitted."""
        entry = self.identities.setdefault(identity, Identity())
        if entry.owner not in (None, namespace):
            return False  # only the owner shares
        shared = frozenset(with_) - {namespace}
        changed = shared != entry.shared_with
        entry.shared_with = shared
        return changed

    def lapse(self, now: float) -> dict[str, tuple[str | None, str | None]]:
        """Release the claims whose owner has been gone for `grace`, handing each to the
        namespace of its oldest remaining member: identity -> (old owner, new owner)."""
        changes: dict[str, tuple[str | None, str | None]] = {}
        for identity, entry in list(self.identities.items()):
            present = any(m.namespace == entry.owner for m in entry.members.values())
            if entry.ownerless_since is None and not present:
                entry.ownerless_since = now  # e.g. restored, and nothing of the owner came back
            if entry.ownerless_since is None or now - entry.ownerless_since < self.grace:
                continue
            old = entry.owner
            heir = min(entry.members.values(), key=lambda m: (m.created, m.namespace), default=None)
            entry.owner = heir.namespace if heir else None
            entry.ownerless_since, entry.shared_with = None, frozenset()
            if entry.owner is None:
                del self.identities[identity]
            changes[identity] = (old, entry.owner)
        return changes
