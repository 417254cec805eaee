"""The etcd adapter against a real etcd: its watch outlives a restart and a member that
loses its leader, and reports a compacted history instead of hanging; members named over
plain http are used one at a time. TLS clusters: test_etcd_cluster_tls.py."""

from __future__ import annotations

import asyncio

import pytest
from aetcd import rpc

from etcd_registrar.etcd import Etcd, EtcdConfig, EtcdUnavailable, WatchCompacted, WatchEvent
from tests.aio import eventually
from tests.harness import EtcdCluster, EtcdServer, wait_for

pytestmark = pytest.mark.integration

PREFIX = "/services/goods/"


async def _written(writer: Etcd, key: str, value: str) -> bool:
    """Put, or False while the writer's channel is still reconnecting (writes are not
    retried by gRPC: one that fails after etcd applied it would be applied twice)."""
    try:
        await writer.put(key, value)
    except EtcdUnavailable:
        return False
    return True


async def test_watch_resumes_after_etcd_restarts(etcd_server: EtcdServer, reader: Etcd) -> None:
    writer = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,), timeout=2))
    _, revision = await reader.get_prefix(PREFIX)
    seen: asyncio.Queue[WatchEvent] = asyncio.Queue()

    async def watch() -> None:
        async for event in reader.watch_prefix(PREFIX, revision + 1):
            seen.put_nowait(event)

    async def next_event() -> tuple[str, str, str]:
        event = await asyncio.wait_for(seen.get(), 10)
        return event.kind, event.key, event.value

    watcher = asyncio.create_task(watch())
    try:
        await writer.put(PREFIX + "a", "1")
        assert await next_event() == ("PUT", PREFIX + "a", "1")
        etcd_server.kill()
        await asyncio.to_thread(etcd_server.start)
        # written before the watcher is back (it waits for its channel to reconnect): only
        # a watch resumed from the revision after its last event sees them
        await eventually(lambda: _written(writer, PREFIX + "b", "2"), 10, "the writer is back")
        await writer.delete(PREFIX + "a")
        assert await next_event() == ("PUT", PREFIX + "b", "2")
        assert await next_event() == ("DELETE", PREFIX + "a", "")
        assert seen.empty() and not watcher.done()
    finally:
        watcher.cancel()
        await writer.close()


async def test_watch_from_a_compacted_revision_says_so(reader: Etcd) -> None:
    first = await reader.put(PREFIX + "a", "1")
    last = await reader.put(PREFIX + "a", "2")
    await reader.member.kv.Compact(rpc.CompactionRequest(revision=last, physical=True))

    async def watch() -> None:
        async for _ in reader.watch_prefix(PREFIX, first):
            pass

    with pytest.raises(WatchCompacted, match=f"compacted its history up to revision {last}"):
        await asyncio.wait_for(watch(), 5)


async def test_watches_move_off_a_member_without_leader(etcd_cluster: EtcdCluster) -> None:
    cut, healthy, _ = etcd_cluster.members
    etcd = Etcd(EtcdConfig(endpoints=tuple(etcd_cluster.endpoints), timeout=2))
    writer = Etcd(EtcdConfig(endpoints=(healthy.endpoint,), timeout=2))
    _, revision = await writer.get_prefix(PREFIX)
    seen: list[asyncio.Queue[str]] = [asyncio.Queue() for _ in etcd_cluster.members]

    async def watch(queue: asyncio.Queue[str]) -> None:
        async for event in etcd.watch_prefix(PREFIX, revision + 1):
            queue.put_nowait(event.key)

    # one watch per member: calls go round-robin, so one of them is on the member cut off
    watchers = [asyncio.create_task(watch(queue)) for queue in seen]
    try:
        await writer.put(PREFIX + "before", "1")
        for queue in seen:
            assert await asyncio.wait_for(queue.get(), 10) == PREFIX + "before"
        etcd_cluster.partition(cut)
        await asyncio.to_thread(
            wait_for, lambda: not cut.healthy(), 10, message="the cut member lost its leader"
        )
        await writer.put(PREFIX + "after", "2")
        for queue in seen:
            assert await asyncio.wait_for(queue.get(), 10) == PREFIX + "after"
    finally:
        for watcher in watchers:
            watcher.cancel()
        await etcd.close()
        await writer.close()


async def test_plain_http_members_by_name_are_used_one_at_a_time(etcd_cluster: EtcdCluster) -> None:
    """Host names over plain http get a channel per member too (gRPC resolves names under
    .localhost to loopback): the client moves past a stopped member."""
    urls = [m.endpoint.replace("127.0.0.1", f"{m.name}.localhost") for m in etcd_cluster.members]
    etcd = Etcd(EtcdConfig(endpoints=tuple(urls), timeout=2))
    try:
        await etcd.put(PREFIX + "before", "1")
        assert etcd.member.target == urls[0].removeprefix("http://")
        etcd_cluster.members[0].stop()
        await eventually(lambda: _written(etcd, PREFIX + "after", "2"), 10, "a write after")
        assert etcd.member.target != urls[0].removeprefix("http://")
        kvs, _ = await etcd.get_prefix(PREFIX)
        assert {kv.key for kv in kvs} == {PREFIX + "before", PREFIX + "after"}
    finally:
        await etcd.close()
