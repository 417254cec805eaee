"""Dry run: an etcd adapter that records writes instead of making them.

Reads go to etcd, with the recorded writes laid over its answers, so the operator sees the
registry it would have made (and a sweep finds nothing to repair that it only imagined).
Writes (transactions, lease grants and revokes, keepalives) never leave the process: a dry
run sharing an owner id with a live operator must not keep that operator's leases alive.
Each recorded write is logged by the registry, which knows the pod behind it, as
"dry-run: would put/delete ...": the transaction result says it was recorded (`dry_run`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping, Sequence

from etcd_registrar.etcd import (
    ABSENT,
    KV,
    Etcd,
    EtcdConfig,
    Fence,
    KeepAliveStream,
    LeaseInfo,
    Op,
    PutOp,
    TxnResult,
)

UNKNOWN_TTL = 1  # a keepalive answer for a lease another run granted: only "alive" (> 0) counts


class Overlay:
    """The writes of a dry run, laid over what etcd answers. Pure: the adapter does the I/O.

    It remembers only where it differs from etcd, so a dry run of days with pod churn holds
    what the registry holds, not every key it ever wrote: a delete of a key etcd lacks is no
    tombstone, a tombstone goes once a read finds etcd without the key too, a lease the dry
    run granted is forgotten with its revoke, and one etcd granted once etcd has it no more.
    """

    def __init__(self) -> None:
        self.keys: dict[str, KV | None] = {}  # key -> as the dry run left it (None: deleted)
        self.granted: dict[int, int] = {}  # lease the dry run granted -> its TTL
        self.revoked: set[int] = set()  # leases etcd granted and the dry run revoked
        self._ids = itertools.count(-1, -1)  # negative: never an id etcd grants

    def grant(self, ttl: int) -> int:
        lease = next(self._ids)
        self.granted[lease] = ttl
        return lease

    def revoke(self, lease: int) -> None:
        """Its keys go with it, as in etcd."""
        for key, kv in self.keys.items():
            if kv is not None and kv.lease == lease:
                self.keys[key] = None
        if self.granted.pop(lease, None) is None:
            self.revoked.add(lease)  # etcd's: its keys in etcd are gone from the dry run's view

    def gone(self, lease: int) -> bool:
        """The dry run revoked `lease`, or never granted it (a negative id it forgot)."""
        return lease in self.revoked or (lease < 0 and lease not in self.granted)

    def view(self, key: str, actual: KV | None) -> KV | None:
        """`key` as the dry run would have left it, given what etcd holds there."""
        kv = self.keys.get(key, actual)  # None stored: deleted
        return None if kv is None or self.gone(kv.lease) else kv

    def apply(self, ops: Sequence[Op], actual: Mapping[str, KV]) -> dict[int, KV | None]:
        """Record `ops` where their guards hold, as etcd would apply them (`actual`: what
        etcd holds at the ops' keys); the refused ones as `TxnResult.refused` has them."""
        refused: dict[int, KV | None] = {}
        for n, op in enumerate(ops):
            found = self.view(op.key, actual.get(op.key))
            expect = op.expect_lease if isinstance(op, PutOp) else (op.lease or None)
            if expect is not None and not _guard_holds(expect, found):
                refused[n] = found
            elif isinstance(op, PutOp):
                self.keys[op.key] = KV(op.key, op.value, op.lease, 0)
            elif op.key in actual:
                self.keys[op.key] = None
            else:  # etcd lacks it too: nothing to remember
                self.keys.pop(op.key, None)
        return refused

    def unwritten(self, keys: Iterable[str]) -> list[str]:
        """The keys of `keys` whose value only etcd can tell: not put by the dry run."""
        return [k for k in keys if self.keys.get(k) is None]

    def many(self, keys: Iterable[str], actual: Mapping[str, KV]) -> dict[str, KV]:
        """`keys` as the dry run sees them (`actual`: etcd's answer for `unwritten(keys)`)."""
        keys = list(keys)
        self._agreed(k for k in keys if k not in actual)
        return {k: kv for k in keys if (kv := self.view(k, actual.get(k))) is not None}

    def prefix(self, prefix: str, actual: Iterable[KV]) -> list[KV]:
        found = {kv.key: kv for kv in actual}
        self._agreed(k for k in list(self.keys) if k.startswith(prefix) and k not in found)
        keys = found.keys() | {k for k in self.keys if k.startswith(prefix)}
        return [kv for k in sorted(keys) if (kv := self.view(k, found.get(k))) is not None]

    def _agreed(self, absent: Iterable[str]) -> None:
        """etcd holds none of `absent`: their tombstones say nothing more."""
        for key in absent:
            if key in self.keys and self.keys[key] is None:
                del self.keys[key]

    def lease_info(self, lease: int, actual: LeaseInfo) -> LeaseInfo:
        """`lease` as the dry run would have left it, given etcd's answer."""
        if not actual.alive:
            self.revoked.discard(lease)  # etcd has it no more either
        if not actual.alive or self.gone(lease):
            return LeaseInfo(-1, 0, [])
        keys = [k for k in actual.keys if k not in self.keys]
        keys += [k for k, kv in self.keys.items() if kv is not None and kv.lease == lease]
        return LeaseInfo(actual.ttl, actual.granted, keys)

    def keepalive(self, lease: int) -> int:
        """The TTL a keepalive of `lease` is answered with (0: etcd no longer has it)."""
        return 0 if self.gone(lease) else self.granted.get(lease, UNKNOWN_TTL)


def _guard_holds(expect: int, found: KV | None) -> bool:
    if expect == ABSENT:
        return found is None
    return found is not None and found.lease == expect


class DryRunEtcd(Etcd):
    """An `Etcd` whose reads go to etcd and whose writes go to an `Overlay`."""

    def __init__(self, config: EtcdConfig) -> None:
        super().__init__(config)
        self.overlay = Overlay()

    async def txn(self, ops: Sequence[Op], fence: Fence | None = None) -> TxnResult:
        """Recorded; guards are judged on the overlaid view. `fence` is not checked: a dry
        run never leads an election."""
        actual = await super().get_many(op.key for op in ops)
        return TxnResult(0, self.overlay.apply(ops, actual), dry_run=True)

    async def campaign(self, key: str, value: str, lease: int) -> tuple[bool, KV | None]:
        result = await self.txn([PutOp(key, value, lease, ABSENT)])
        return 0 not in result.refused, (await self.get_many([key])).get(key)

    async def get_many(self, keys: Iterable[str]) -> dict[str, KV]:
        keys = list(keys)
        actual = await super().get_many(self.overlay.unwritten(keys))
        return self.overlay.many(keys, actual)

    async def get_prefix(self, prefix: str, *, keys_only: bool = False) -> tuple[list[KV], int]:
        actual, revision = await super().get_prefix(prefix, keys_only=keys_only)
        return self.overlay.prefix(prefix, actual), revision

    async def grant(self, ttl: int) -> int:
        return self.overlay.grant(ttl)

    async def revoke(self, lease: int) -> None:
        self.overlay.revoke(lease)

    async def time_to_live(self, lease: int) -> LeaseInfo:
        ttl = self.overlay.granted.get(lease)
        if ttl is not None:  # etcd never heard of it
            actual = LeaseInfo(ttl, ttl, [])
        elif lease < 0:  # one the dry run granted and revoked
            actual = LeaseInfo(-1, 0, [])
        else:
            actual = await super().time_to_live(lease)
        return self.overlay.lease_info(lease, actual)

    async def keepalive_stream(self) -> KeepAliveStream:
        return _AnsweredHere(self.overlay)


class _AnsweredHere(KeepAliveStream):
    """Keepalives answered in the process, never sent to etcd."""

    def __init__(self, overlay: Overlay) -> None:  # no call, no token: nothing goes out
        self._overlay = overlay
        self._answers: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    async def send(self, lease: int) -> None:
        self._answers.put_nowait((lease, self._overlay.keepalive(lease)))

    async def receive(self) -> tuple[int, int]:
        return await self._answers.get()

    def close(self) -> None:
        pass  # nothing open
