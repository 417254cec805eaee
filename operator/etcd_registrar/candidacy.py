"""What a replica publishes in the leader key, and what it makes of the leader it finds there.

A replica stands for one configuration of one installation: its scope (namespaces, pod
selector), the installation's name and the generation of its configuration (the chart sets
them to ``<namespace>/<release>`` and the Helm revision). Finding another replica leading, it
is one of:

- a standby: the same configuration, another replica of it;
- a successor: a newer configuration of the same installation, a rollout under way (a
  scope change included). It stands by, healthy, and leads once the old leader is gone;
- superseded: an older configuration of it. It stands by, healthy, and takes a vacant leader
  key only after an election TTL, so a live replica of the newer configuration leads first;
- refused: another installation with the same owner id (another installation name, or
  another scope under the same generation). The two would delete each other's keys, so it
  says so loudly; it too takes the key only once it has stayed vacant for an election TTL,
  so that a live replica never leaves the owner id without a leader.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str  # the replica: <pod name>/<pid>
    namespaces: tuple[str, ...] = ()  # sorted; () is every namespace
    pod_selector: str | None = None
    installation: str = ""  # "" when not named: only the scope tells installations apart
    generation: int = 0

    def value(self) -> str:
        """The leader key's value while this replica leads."""
        return json.dumps(
            {
                "id": self.id,
                "namespaces": list(self.namespaces),
                "podSelector": self.pod_selector,
                "installation": self.installation,
                "generation": self.generation,
            },
            sort_keys=True,
        )

    @classmethod
    def parse(cls, value: str) -> Candidate | None:
        """The candidate a leader key names; None if no etcd-registrar wrote it. Fields a
        leader of an older version did not publish take their defaults."""
        try:
            data = json.loads(value) if len(value) < 4096 else None
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        name, namespaces = data.get("id"), data.get("namespaces") or []
        selector, generation = data.get("podSelector"), data.get("generation", 0)
        installation = data.get("installation", "")
        if not (
            isinstance(name, str)
            and isinstance(namespaces, list)
            and all(isinstance(n, str) for n in namespaces)
            and isinstance(selector, str | None)
            and isinstance(installation, str)
            and type(generation) is int
        ):
            return None
        return cls(name, tuple(namespaces), selector, installation, generation)

    def describe_scope(self) -> str:
        namespaces = ", ".join(self.namespaces) or "all namespaces"
        return namespaces + (f" (pods {self.pod_selector})" if self.pod_selector else "")


class Standing(enum.Enum):
    STANDBY = "standby"
    SUCCESSOR = "successor"
    SUPERSEDED = "superseded"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Verdict:
    standing: Standing
    reason: str = ""  # what the replica logs; for REFUSED, what is wrong and what to fix

    @property
    def defers(self) -> bool:
        """Whether a vacant leader key is taken only after an election TTL."""
        return self.standing in (Standing.SUPERSEDED, Standing.REFUSED)


STANDBY = Verdict(Standing.STANDBY)


def judge(me: Candidate, leader: Candidate | None) -> Verdict:
    """What `me` is beside `leader` (None: a leader key no etcd-registrar wrote)."""
    if leader is None:
        return Verdict(
            Standing.REFUSED,
            "the leader key holds a value no etcd-registrar wrote: another program writes "
            "under /etcd-registrar/ (give the etcd user of anything else no access to it)",
        )
    if leader.installation and me.installation and leader.installation != me.installation:
        return Verdict(
            Standing.REFUSED,
            f"another installation ({leader.installation}) with the same owner id leads "
            f"({leader.id}), this one is {me.installation}: they would delete each other's "
            "keys; give each installation its own --owner-id",
        )
    if (leader.namespaces, leader.pod_selector) == (me.namespaces, me.pod_selector):
        return STANDBY
    older, newer = sorted((leader, me), key=lambda c: c.generation)
    change = (
        f"{older.describe_scope()} (generation {older.generation}) becomes "
        f"{newer.describe_scope()} (generation {newer.generation})"
    )
    if leader.generation < me.generation:
        return Verdict(
            Standing.SUCCESSOR,
            f"a newer configuration takes over from {leader.id}: {change}; "
            "standing by until the old leader goes",
        )
    if leader.generation > me.generation:
        return Verdict(
            Standing.SUPERSEDED,
            f"a newer configuration leads ({leader.id}): {change}; this replica of the "
            "older one stands by",
        )
    return Verdict(
        Standing.REFUSED,
        f"another installation with the same owner id leads ({leader.id}) and watches "
        f"{leader.describe_scope()}, this one {me.describe_scope()} (both configuration "
        f"generation {me.generation}): they would delete each other's keys; give each "
        "installation its own --owner-id (or, for a new configuration of this one, a "
        "higher --config-generation)",
    )
