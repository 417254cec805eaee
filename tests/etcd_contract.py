"""The etcd contract: what the operator relies on etcd for, as one suite of tests.

It runs against the in-memory etcd (tests/unit/test_memory_etcd.py) and against real etcd
3.4 and 3.6 (tests/integration/test_etcd_contract.py): a test module subclasses
`EtcdContract` and gives it a `port` (an `EtcdPort` on an empty etcd) and `advance` (let
that many seconds pass). A behaviour of the fake that etcd does not share fails here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from etcd_registrar.etcd import (
    ABSENT,
    DeleteOp,
    Fence,
    Fenced,
    LeaseNotFound,
    PutOp,
    WatchEvent,
)
from etcd_registrar.port import EtcdPort
from tests.aio import eventually

Advance = Callable[[float], Awaitable[None]]


async def value(port: EtcdPort, key: str) -> str | None:
    kv = (await port.get_many([key])).get(key)
    return None if kv is None else kv.value


class EtcdContract:
    async def test_puts_and_reads(self, port: EtcdPort) -> None:
        first = await port.put("/c/b", "1")
        second = await port.put("/c/a", "2")
        await port.put("/other", "3")
        assert second == first + 1  # one revision per write
        kvs, revision = await port.get_prefix("/c/")
        assert [(kv.key, kv.value) for kv in kvs] == [("/c/a", "2"), ("/c/b", "1")]
        assert revision == second + 1
        again = await port.put("/c/a", "4")
        kv = (await port.get_many(["/c/a", "/c/none"]))["/c/a"]
        assert (kv.value, kv.create_revision, kv.mod_revision) == ("4", second, again)
        keys, _ = await port.get_prefix("/c/", keys_only=True)
        assert [(kv.key, kv.value) for kv in keys] == [("/c/a", ""), ("/c/b", "")]

    async def test_a_transaction_that_changes_nothing_keeps_the_revision(
        self, port: EtcdPort
    ) -> None:
        written = await port.put("/c/a", "1")
        result = await port.txn([DeleteOp("/c/absent")])
        assert (result.revision, result.refused) == (written, {})
        both = await port.txn([PutOp("/c/b", "2"), DeleteOp("/c/a")])
        assert both.revision == written + 1  # one revision per transaction
        assert await port.get_many(["/c/a"]) == {}

    async def test_guarded_ops_apply_each_on_its_own(self, port: EtcdPort) -> None:
        ours, theirs = await port.grant(30), await port.grant(30)
        await port.put("/c/taken", "theirs", theirs)
        await port.put("/c/ours", "old", ours)
        result = await port.txn(
            [
                PutOp("/c/new", "x", ours, ABSENT),  # absent: put
                PutOp("/c/taken", "x", ours, ABSENT),  # exists: refused
                PutOp("/c/ours", "new", ours, ours),  # on our lease: put
                PutOp("/c/taken2", "x", ours, theirs),  # not on theirs (absent): refused
                DeleteOp("/c/taken", ours),  # not on ours: refused
            ]
        )
        assert set(result.refused) == {1, 3, 4}
        found = result.refused[1]
        assert found is not None and (found.value, found.lease) == ("theirs", theirs)
        assert result.refused[3] is None
        assert await value(port, "/c/new") == "x"
        assert await value(port, "/c/ours") == "new"
        assert await value(port, "/c/taken") == "theirs"
        await port.txn([DeleteOp("/c/ours", ours)])
        assert await value(port, "/c/ours") is None

    async def test_a_fenced_write_applies_only_while_the_leader_key_lives(
        self, port: EtcdPort
    ) -> None:
        lease = await port.grant(30)
        won, holder = await port.campaign("/c/leader", "me", lease)
        assert won and holder is not None and holder.value == "me"
        fence = Fence(holder.key, holder.create_revision)
        await port.put("/c/a", "1", fence=fence)
        lost, other = await port.campaign("/c/leader", "you", lease)
        assert not lost and other is not None and other.value == "me"
        await port.revoke(lease)  # the leader key goes with its lease
        await port.put("/c/leader", "me")  # the same key again: another create revision
        with pytest.raises(Fenced):
            await port.txn([PutOp("/c/b", "2"), DeleteOp("/c/a")], fence)
        assert await value(port, "/c/a") == "1" and await value(port, "/c/b") is None
        with pytest.raises(Fenced):
            await port.resign(fence)
        current = (await port.get_many(["/c/leader"]))["/c/leader"]
        await port.resign(Fence(current.key, current.create_revision))
        assert await value(port, "/c/leader") is None

    async def test_leases_hold_keys_until_revoked(self, port: EtcdPort) -> None:
        lease = await port.grant(30)
        await port.put("/c/a", "1", lease)
        await port.put("/c/b", "2", lease)
        info = await port.time_to_live(lease)
        assert info.alive and info.granted == 30 and 28 <= info.ttl <= 30
        assert sorted(info.keys) == ["/c/a", "/c/b"]
        await port.revoke(lease)
        assert await port.get_many(["/c/a", "/c/b"]) == {}
        assert not (await port.time_to_live(lease)).alive
        with pytest.raises(LeaseNotFound):
            await port.put("/c/a", "1", lease)

    async def test_a_lease_not_kept_alive_expires_with_its_keys(
        self, port: EtcdPort, advance: Advance
    ) -> None:
        kept, left = await port.grant(2), await port.grant(2)
        await port.put("/c/kept", "1", kept)
        await port.put("/c/left", "1", left)
        stream = await port.keepalive_stream()
        try:
            for _ in range(4):
                await advance(1.0)
                await stream.send(kept)
                assert await asyncio.wait_for(stream.receive(), 5) == (kept, 2)

            async def gone() -> bool:
                return await port.get_many(["/c/left"]) == {}

            await eventually(gone, 5, "the key of the lease not kept alive expired")
            assert await value(port, "/c/kept") == "1"
            await port.revoke(kept)
            await stream.send(kept)  # a keepalive of a lease etcd no longer has: TTL 0
            assert await asyncio.wait_for(stream.receive(), 5) == (kept, 0)
        finally:
            stream.close()

    async def test_a_watch_replays_from_a_revision_then_follows(self, port: EtcdPort) -> None:
        start = await port.put("/c/a", "1")
        await port.put("/elsewhere", "x")
        await port.txn([PutOp("/c/b", "2"), DeleteOp("/c/a")])
        events = port.watch_prefix("/c/", start)
        seen: list[WatchEvent] = []

        async def take(n: int) -> None:
            async for event in events:
                seen.append(event)
                if len(seen) == n:
                    return

        await asyncio.wait_for(take(3), 5)
        last = await port.put("/c/c", "3")
        await asyncio.wait_for(take(4), 5)
        assert [(e.kind, e.key, e.value) for e in seen] == [
            ("PUT", "/c/a", "1"),
            ("PUT", "/c/b", "2"),
            ("DELETE", "/c/a", ""),
            ("PUT", "/c/c", "3"),
        ]
        assert [e.revision for e in seen] == [start, start + 2, start + 2, last]
