"""The etcd port: every call the operator makes to etcd, as one Protocol.

Its adapters: `etcd.Etcd` (gRPC), `dryrun.DryRunEtcd` (reads etcd, records writes) and
`memory.MemoryEtcd` (in the process, for fast tests). One contract suite
(tests/etcd_contract.py) runs against the in-memory one and against real etcd 3.4 and 3.6,
so the fake cannot drift from what it stands for.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence
from typing import Protocol

from etcd_registrar.etcd import KV, Fence, KeepAliveStream, LeaseInfo, Op, TxnResult, WatchEvent


class EtcdPort(Protocol):
    async def close(self) -> None: ...

    async def txn(self, ops: Sequence[Op], fence: Fence | None = None) -> TxnResult:
        """Up to 128 ops; guarded ones apply only where their guard holds (refused: what
        holds the key now); with `fence`, none applies unless the fence holds (Fenced)."""

    async def get_prefix(self, prefix: str, *, keys_only: bool = False) -> tuple[list[KV], int]:
        """Every key under `prefix`, sorted, and the revision of the read."""

    async def get_many(self, keys: Iterable[str]) -> dict[str, KV]:
        """The keys of `keys` that exist."""

    async def put(self, key: str, value: str, lease: int = 0, fence: Fence | None = None) -> int:
        """Unguarded; the revision of the write."""

    async def campaign(self, key: str, value: str, lease: int) -> tuple[bool, KV | None]:
        """Create `key` unless it exists: (won, who holds it now)."""

    async def resign(self, fence: Fence) -> None:
        """Delete the fence's key if it is still the one the fence names."""

    async def grant(self, ttl: int) -> int: ...

    async def revoke(self, lease: int) -> None:
        """The lease ends, and its keys with it."""

    async def time_to_live(self, lease: int) -> LeaseInfo:
        """ttl -1 for a lease etcd does not have."""

    async def keepalive_stream(self) -> KeepAliveStream: ...

    def watch_prefix(self, prefix: str, start_revision: int) -> AsyncGenerator[WatchEvent, None]:
        """PUT and DELETE events under `prefix` from `start_revision` on."""

    async def ping(self, key: str) -> None:
        """Succeeds iff etcd serves requests."""
