"""Plan: desired endpoints vs what etcd holds → the puts and deletes that close the gap. Pure.

Ownership rule: the operator writes and deletes only keys that are absent or on its own
leases. A wanted key another writer holds is never overwritten (it is reported as taken);
a key nobody wants is deleted only if it sits on one of the operator's leases. A wanted
key of ours that changed behind the operator's back is restored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from etcd_registrar.source import Endpoint, Pool, pool_of


@dataclass(frozen=True, slots=True)
class Current:
    """A key as etcd holds it. `pool` is None when the key is not on one of our leases."""

    value: str
    pool: Pool | None


@dataclass(frozen=True, slots=True)
class Conflict:
    """Several pods render the same key: the oldest wins, the others are refused."""

    key: str
    winner: Endpoint
    losers: tuple[Endpoint, ...]


@dataclass(slots=True)
class Plan:
    puts: list[Endpoint] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    taken: list[Endpoint] = field(default_factory=list)  # wanted, but another writer's key

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes)


def winner(claimants: Iterable[Endpoint], held: str | None = None) -> Endpoint:
    """The oldest pod; on a tie (timestamps have 1 s resolution) the one holding the key now."""
    return min(claimants, key=lambda e: (e.rank[0], e.value != held, e.rank))


def plan(
    keys: Iterable[str],
    claims: Mapping[str, Mapping[str, Endpoint]],
    current: Mapping[str, Current],
) -> Plan:
    """Changes for `keys`, given who claims each key (by pod uid) and what etcd holds."""
    result = Plan()
    for key in keys:
        wanted = claims.get(key)
        have = current.get(key)
        if wanted:
            win = winner(wanted.values(), have.value if have else None)
            if len(wanted) > 1:
                losers = tuple(sorted((e for e in wanted.values() if e is not win), key=_rank))
                result.conflicts.append(Conflict(key, win, losers))
            if have is not None and have.pool is None:
                result.taken.append(win)
            elif have is None or have.value != win.value or have.pool != pool_of(win):
                result.puts.append(win)
        elif have is not None and have.pool is not None:
            result.deletes.append(key)
    return result


def _rank(endpoint: Endpoint) -> tuple[str, str, str]:
    return endpoint.rank
