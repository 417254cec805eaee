"""What a replica publishes in the leader key, and what it makes of the leader it finds there.

A replica stands for one configuration of one installation in one cluster: its scope
(namespaces, pod selector), the installation's name and the generation of its configuration
(the chart sets them to ``<namespace>/<release>`` and the Helm revision), and its cluster's
identity (the UID of its kube-system namespace). Finding another replica leading, it is one
of:

- foreign: the leader runs in another cluster with the same owner id. Two clusters would
  adopt and delete each other's keys, so it is refused loudly and never leads while any
  record of the other cluster (leader key, lease or claim record) exists;
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
    cluster: str = ""  # "" when unknown: clusters are not told apart

    def value(self) -> str:
        """The leader key's value while this replica leads."""
        return json.dumps(
            {
                "id": self.id,
                "namespaces": list(self.namespaces),
                "podSelector": self.pod_selector,
                "installation": self.installation,
                "generation": self.generation,
                "cluster": self.cluster,
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
        installation, cluster = data.get("installation", ""), data.get("cluster", "")
        if not (
            isinstance(name, str)
            and isinstance(namespaces, list)
            and all(isinstance(n, str) for n in namespaces)
            and isinstance(selector, str | None)
            and isinstance(installation, str)
            and isinstance(cluster, str)
            and type(generation) is int
        ):
            return None
        return cls(name, tuple(namespaces), selector, installation, generation, cluster)

    def describe_scope(self) -> str:
        namespaces = ", ".join(self.namespaces) or "all namespaces"
        return namespaces + (f" (pods {self.pod_selector})" if self.pod_selector else "")


class Standing(enum.Enum):
    FOREIGN = "foreign"
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
        """Whether a vacant leader key is taken only after an election TTL (and a look at
        the owner's records)."""
        return self.standing is not Standing.STANDBY and self.standing is not Standing.SUCCESSOR

    @property
    def refused(self) -> bool:
        """Whether this replica refuses to run (/readyz fails)."""
        return self.standing is Standing.REFUSED or self.standing is Standing.FOREIGN


STANDBY = Verdict(Standing.STANDBY)


def judge(me: Candidate, leader: Candidate | None) -> Verdict:
    """What `me` is beside `leader` (None: a leader key no etcd-registrar wrote)."""
    if leader is None:
        return Verdict(
            Standing.REFUSED,
            "the leader key holds a value no etcd-registrar wrote: another program writes "
            "under /etcd-registrar/ (give the etcd user of anything else no access to it)",
        )
    if is_foreign(leader.cluster, me.cluster):
        return foreign(me, leader.cluster, f"its replica {leader.id} leads")
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


def is_foreign(cluster: str, mine: str) -> bool:
    """Whether `cluster` is known to be another cluster than `mine`."""
    return bool(cluster and mine and cluster != mine)


def foreign(me: Candidate, cluster: str, seen: str) -> Verdict:
    """Refused: another cluster uses this owner id (`seen`: how we know)."""
    return Verdict(
        Standing.FOREIGN,
        f"another cluster (kube-system namespace UID {cluster}) uses the same owner id: "
        f"{seen}; this is cluster {me.cluster}. Sharing one owner id, the two would adopt and "
        "delete each other's keys: this one stands aside. Give each cluster its own "
        "--owner-id (the chart's default is unique per cluster)",
    )


def record_cluster(value: str) -> str:
    """The cluster a record of the owner names (leader key, lease or claim record); "" if
    none or if it is not a record we wrote."""
    try:
        data = json.loads(value) if len(value) < 4096 else None
    except (ValueError, RecursionError):
        return ""
    cluster = data.get("cluster") if isinstance(data, dict) else None
    return cluster if isinstance(cluster, str) else ""
