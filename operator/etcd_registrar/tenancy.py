"""Tenancy: which namespace may publish into which key range. Pure: no I/O, no clock.

A service identity is the key range one (format, prefix, service) renders into: the key
up to its first per-pod field (``/services/payments/``). Consumers read a whole range, so
whoever may put one key there may send them traffic. The first namespace that registers into
an identity claims it (like OpenShift's route admission and consul-k8s' catalog sync); other
namespaces get no keys there unless the owner shares it (``spec.shareWith``). The claim holds
while the owner has a registration or a pod for the identity, and lapses `grace` seconds
after its last one is gone, so a rollout or a re-created registration does not lose it.

Identities are ranges, so they nest: ``/services/`` contains ``/services/goods/``, and
CoreDNS's ``/skydns/local/goods/x/`` (``x.goods``) sits inside ``goods``'s range. A namespace
may claim a range only if no overlapping range (one containing it, or inside it) is another
namespace's and unshared; and a key may be written only if every claimed range that contains
it is its namespace's or shared with it. A key contains the range of its own name too
(CoreDNS answers ``x.goods`` from the key ``.../goods/x`` when nothing lies below it).

Operator policy confines every key to the allowed prefixes, and never lets one under the
operator's own bookkeeping.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from etcd_registrar.formats import is_reserved

RELEASE_GRACE = 60.0  # seconds a claim outlives its owner's last registration or pod
ASSIGNMENT = "etcd-registrar.io/claims"  # the Namespace annotation an administrator sets


@dataclass(frozen=True, slots=True)
class ClaimPolicy:
    """The operator's rules for claims: how long one outlives its owner, how many ranges one
    namespace may own (assigned ones aside), and whether only assigned ranges may be owned."""

    grace: float = RELEASE_GRACE
    max_per_namespace: int = 100
    assigned_only: bool = False


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


def as_range(key_or_range: str) -> str:
    """The range a key or identity stands for: a key `k` is the range `k/`."""
    return key_or_range if key_or_range.endswith("/") else f"{key_or_range}/"


def overlap(a: str, b: str) -> bool:
    """True if ranges `a` and `b` share a key: one is a prefix of the other."""
    return a.startswith(b) or b.startswith(a)


Handovers = dict[str, tuple[str | None, str | None]]  # identity -> (old owner, new owner)


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


class Blocker(NamedTuple):
    """A claimed range that keeps a namespace out, and the namespace that owns it (`elsewhere`:
    the owner id of the other cluster whose claim it is; empty: this operator's own)."""

    range: str
    owner: str
    elsewhere: str = ""


class Remote(NamedTuple):
    """A claim recorded by another owner id sharing this etcd (another cluster): a namespace of
    the same name there is the same tenant (SIG Multicluster's namespace sameness)."""

    namespace: str
    shared_with: frozenset[str]
    revision: int  # its record's create revision: of two overlapping claims, the older stands


T = TypeVar("T")


class RangeIndex(Generic[T]):
    """Key ranges, each with a value, sorted: the ranges containing one are found with a
    look-up a segment, those inside one as a contiguous run by bisection, so both stay
    sub-linear at 10,000 ranges."""

    def __init__(self) -> None:
        self.values: dict[str, T] = {}
        self._sorted: list[str] = []

    def set(self, range_: str, value: T) -> None:
        if range_ not in self.values:
            bisect.insort(self._sorted, range_)
        self.values[range_] = value

    def discard(self, range_: str) -> None:
        if range_ in self.values:
            del self.values[range_]
            self._sorted.pop(bisect.bisect_left(self._sorted, range_))

    def containing(self, range_: str) -> Iterator[str]:
        """The ranges that contain `range_`, itself included."""
        end = range_.find("/")
        while end != -1:
            if (prefix := range_[: end + 1]) in self.values:
                yield prefix
            end = range_.find("/", end + 1)

    def overlapping(self, range_: str) -> Iterator[str]:
        """The ranges that contain `range_` or lie inside it."""
        yield from self.containing(range_)
        ranges = self._sorted
        for index in range(bisect.bisect_right(ranges, range_), len(ranges)):
            if not ranges[index].startswith(range_):
                break
            yield ranges[index]


class Claims:
    """The owner of every identity seen, who wants in, and what an administrator assigned.

    An administrator assigns ranges to a namespace (the Namespace annotation ``ASSIGNMENT``,
    which only cluster-scoped rights can set, as with Pod Security's namespace labels): no
    other namespace may own a range overlapping an assigned one, and an owner squatting such a
    range loses it at once to the assignee (or to nobody).
    """

    def __init__(self, policy: ClaimPolicy | None = None) -> None:
        self.policy = policy or ClaimPolicy()
        self.grace = self.policy.grace
        self.identities: dict[str, Identity] = {}
        self.assigned: RangeIndex[str] = RangeIndex()  # range -> the namespace assigned it
        self.owned: Counter[str] = Counter()  # ranges owned per namespace (the quota)
        self._claimed: RangeIndex[str] = RangeIndex()  # the identities with an owner -> owner
        self.remote: RangeIndex[dict[str, Remote]] = RangeIndex()  # range -> owner id -> claim
        self.revisions: dict[str, int] = {}  # identity -> create revision of its record here
        self._blockers: dict[tuple[str, str], Blocker | None] = {}  # cleared on every change

    def owner(self, identity: str) -> str | None:
        entry = self.identities.get(identity)
        return entry.owner if entry else None

    def admits(self, identity: str, namespace: str) -> bool:
        """True if `namespace` may hold keys in the range `identity`."""
        return self.blocker(identity, namespace) is None and not self.unclaimable(
            identity, namespace
        )

    def unclaimable(self, identity: str, namespace: str) -> str | None:
        """Why `namespace` may not own `identity`, which nobody owns (the policy's reasons:
        another namespace's assignment, assigned claims only, the quota); None: it may, or
        somebody owns it (`blocker` then says whether `namespace` is admitted)."""
        if self.owner(identity) is not None:
            return None  # owned: `blocker` says whether `namespace` is admitted
        return self._policy(identity, namespace)

    def _policy(self, identity: str, namespace: str, *, quota: bool = True) -> str | None:
        range_ = as_range(identity)
        for assigned in self.assigned.overlapping(range_):
            if (assignee := self.assigned.values[assigned]) != namespace:
                return (
                    f"the range {assigned} is assigned to namespace {assignee} by an "
                    f"administrator (Namespace annotation {ASSIGNMENT})"
                )
        if any(self.assigned.containing(range_)):
            return None  # assigned to `namespace`: neither the mode nor the quota applies
        if self.policy.assigned_only:
            return (
                "this operator lets namespaces own only the ranges an administrator assigned "
                f"(--claims=assigned), and none holding {identity} is assigned to {namespace}: "
                f"ask for it in the Namespace annotation {ASSIGNMENT}"
            )
        if quota and self.owned[namespace] >= self.policy.max_per_namespace:
            return (
                f"namespace {namespace} owns {self.owned[namespace]} service ranges, the limit "
                f"of this operator (--max-claims-per-namespace {self.policy.max_per_namespace})"
            )
        return None

    def blocker(self, identity: str, namespace: str) -> Blocker | None:
        """The claimed range overlapping `identity` (containing it, inside it, or itself) that
        is another namespace's and not shared with `namespace`; None: admitted."""
        asked = (identity, namespace)
        if asked not in self._blockers:
            range_ = as_range(identity)
            found = next(
                itertools.chain(
                    self._blocking(self._claimed.overlapping(range_), namespace),
                    self._remote_blocking(self.remote.overlapping(range_), namespace),
                ),
                None,
            )
            self._blockers[asked] = found
        return self._blockers[asked]

    def key_blocker(self, key: str, namespace: str) -> Blocker | None:
        """The claimed range containing `key` that keeps `namespace` out; None: admitted."""
        range_ = as_range(key)
        return next(
            itertools.chain(
                self._blocking(self._claimed.containing(range_), namespace),
                self._remote_blocking(self.remote.containing(range_), namespace),
            ),
            None,
        )

    def _blocking(self, ranges: Iterable[str], namespace: str) -> Iterator[Blocker]:
        for claimed in ranges:
            entry = self.identities[claimed]
            if entry.owner not in (None, namespace) and namespace not in entry.shared_with:
                yield Blocker(claimed, entry.owner)

    def _remote_blocking(self, ranges: Iterable[str], namespace: str) -> Iterator[Blocker]:
        """Other clusters' claims on `ranges` that keep `namespace` out: another namespace's,
        unshared, and not younger than an overlapping claim of ours (that race we won)."""
        for range_ in ranges:
            for owner_id, claim in self.remote.values[range_].items():
                if claim.namespace == namespace or namespace in claim.shared_with:
                    continue
                if not self._beaten(range_, claim):
                    yield Blocker(range_, claim.namespace, owner_id)

    def _beaten(self, range_: str, claim: Remote) -> bool:
        """True if one of our recorded claims overlapping `range_`, of another namespace, is
        older than the other cluster's `claim`."""
        return any(
            self._claimed.values[mine] != claim.namespace
            and self.revisions.get(mine, claim.revision) < claim.revision
            for mine in self._claimed.overlapping(range_)
        )

    def remote_claim(self, owner_id: str, range_: str, claim: Remote | None) -> Handovers:
        """Another cluster recorded (None: released) a claim: ours that it overlaps, of
        another namespace it does not share with, pass to an heir that may own them (or to
        nobody) unless ours is older. Returns the claims that changed hands here."""
        claims = dict(self.remote.values.get(range_, {}))
        if claim is None:
            claims.pop(owner_id, None)
        else:
            claims[owner_id] = claim
        if claims:
            self.remote.set(range_, claims)
        else:
            self.remote.discard(range_)
        self._blockers.clear()
        return self._yield_to_remote(range_)

    def recorded(self, identity: str, revision: int | None) -> Handovers:
        """Our record of `identity` was written (its create revision) or deleted (None)."""
        if revision is None:
            self.revisions.pop(identity, None)
        else:
            self.revisions[identity] = revision
        self._blockers.clear()
        return self._yield_to_remote(identity)

    def _yield_to_remote(self, range_: str) -> Handovers:
        changes: Handovers = {}
        for identity in list(self._claimed.overlapping(as_range(range_))):
            entry = self.identities[identity]
            owner = entry.owner
            assert owner is not None
            remote = self._remote_blocking(self.remote.overlapping(as_range(identity)), owner)
            if next(remote, None) is not None:
                heir = self._heir(identity, entry)
                self._own(identity, entry, heir)
                changes[identity] = (owner, heir)
        return changes

    def _own(self, identity: str, entry: Identity, namespace: str | None) -> None:
        """Make `namespace` the owner of `identity` (None: nobody), keeping the index."""
        if namespace is None:
            self._claimed.discard(identity)
        else:
            self._claimed.set(identity, namespace)
        if entry.owner is not None:
            self.owned[entry.owner] -= 1
        if namespace is not None:
            self.owned[namespace] += 1
        entry.owner, entry.ownerless_since = namespace, None
        self._blockers.clear()

    def may_claim(self, identity: str, namespace: str) -> bool:
        """No other namespace's unshared claim overlaps `identity` (itself aside), and the
        policy lets `namespace` own it."""
        range_ = as_range(identity)
        blockers = self._blocking(self._claimed.overlapping(range_), namespace)
        if not all(b.range == identity for b in blockers):
            return False
        remote = self._remote_blocking(self.remote.overlapping(range_), namespace)
        return next(remote, None) is None and not self._policy(identity, namespace)

    def restore(self, identity: str, namespace: str) -> None:
        """An owner recorded earlier (etcd, or keys already held): it stands until it lapses."""
        self._own(identity, self.identities.setdefault(identity, Identity()), namespace)

    def join(self, identity: str, member: Member) -> bool:
        """`member` wants keys in `identity`; True if that made its namespace the owner (an
        identity that overlaps another namespace's claim is not made anybody's)."""
        entry = self.identities.setdefault(identity, Identity())
        entry.members[member.id] = member
        if entry.owner == member.namespace:
            entry.ownerless_since = None
            return False
        if entry.owner is None and self.may_claim(identity, member.namespace):
            self._own(identity, entry, member.namespace)
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
        if changed:
            self._blockers.clear()
        return changed

    def assign(self, namespace: str, ranges: Iterable[str]) -> Handovers:
        """An administrator assigns `ranges` to `namespace` (replacing what it had): a range
        owned against the assignments passes at once to the oldest member that may own it,
        or to nobody; a range nobody owned goes to such a member. Returns the identities
        that changed hands: identity -> (old owner, new owner)."""
        for gone in [r for r, assignee in self.assigned.values.items() if assignee == namespace]:
            self.assigned.discard(gone)
        for range_ in ranges:
            self.assigned.set(as_range(range_), namespace)
        self._blockers.clear()
        changes: Handovers = {}
        for identity, entry in list(self.identities.items()):
            old = entry.owner
            if old is not None and not self._policy(identity, old, quota=False):
                continue
            heir = self._heir(identity, entry)
            if heir != old:
                self._own(identity, entry, heir)
                changes[identity] = (old, heir)
        return changes

    def _heir(self, identity: str, entry: Identity) -> str | None:
        """The namespace of the oldest member that may own `identity`; None: none may."""
        members = sorted(entry.members.values(), key=lambda m: (m.created, m.namespace))
        return next((m.namespace for m in members if self.may_claim(identity, m.namespace)), None)

    def lapse(self, now: float) -> Handovers:
        """Release the claims whose owner has been gone for `grace`, handing each to the
        namespace of its oldest remaining member that may own it: identity -> (old owner,
        new owner). An identity nobody may own yet waits, and is tried again next time."""
        changes: Handovers = {}
        for identity, entry in list(self.identities.items()):
            present = any(m.namespace == entry.owner for m in entry.members.values())
            if entry.ownerless_since is None and not present:
                entry.ownerless_since = now  # e.g. restored, and nothing of the owner came back
            if entry.ownerless_since is None or now - entry.ownerless_since < self.grace:
                continue
            old = entry.owner
            heir = self._heir(identity, entry)
            if heir is None and old is None and entry.members:
                continue  # kept out by an overlapping claim: waits for it to lapse
            since = entry.ownerless_since
            self._own(identity, entry, heir)
            entry.shared_with = frozenset()
            if heir is None:
                if entry.members:
                    entry.ownerless_since = since
                else:
                    del self.identities[identity]
            changes[identity] = (old, heir)
        return changes
