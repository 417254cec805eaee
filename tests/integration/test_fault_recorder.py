"""The fault matrix's consumer record (issue #22) on a real etcd: every change under the
prefixes, with prevKV, across a broken connection and a compaction of the history it would
resume from."""

from __future__ import annotations

import pytest
from aetcd import rpc

from etcd_registrar.etcd import Etcd, EtcdConfig
from tests.aio import eventually
from tests.faults.checker import check
from tests.faults.recorders import ConsumerRecorder
from tests.harness import EtcdServer, PeerNetwork

pytestmark = pytest.mark.integration


async def test_the_record_resumes_and_relists_after_a_compaction(etcd_server: EtcdServer) -> None:
    network = PeerNetwork()  # its relays forward any TCP: here the consumer's connection
    relay = network.relay()
    network.forward(relay, etcd_server.client_port)
    writer = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
    try:
        await writer.put("/a/1", "v1")
        await writer.put("/b/1", "x")
        await writer.put("/elsewhere", "not watched")
        with ConsumerRecorder([relay], ["/a/", "/b/"]) as consumer:
            await writer.put("/a/2", "v2")
            await writer.put("/a/1", "v1b")
            live = {"/a/1": "v1b", "/a/2": "v2", "/b/1": "x"}
            await eventually(lambda: consumer.view() == live, 10, "the live changes seen")
            network.cut(relay)  # the consumer is away while ...
            await writer.delete("/a/2")
            revision = await writer.put("/b/2", "y")
            await writer.member.kv.Compact(rpc.CompactionRequest(revision=revision, physical=True))
            network.heal(relay)  # ... its history is compacted: it must read again
            back = {"/a/1": "v1b", "/b/1": "x", "/b/2": "y"}
            await eventually(lambda: consumer.view() == back, 20, "the gap's changes relisted")
            await writer.put("/b/2", "z")  # and it watches on from the relist
            await eventually(lambda: consumer.view()["/b/2"] == "z", 10, "watched after it")
        assert consumer.relists == 2  # both prefixes' watches were behind the compaction
        events = [(s.key, s.value, s.prev) for s in consumer.history()]
        assert events[:4] == [
            ("/a/1", "v1", None),  # the first read
            ("/b/1", "x", None),
            ("/a/2", "v2", None),  # live, with prevKV
            ("/a/1", "v1b", "v1"),
        ]
        # the relists' difference (the two prefixes' watches relist in either order)
        assert sorted(events[4:6], key=str) == [("/a/2", None, "v2"), ("/b/2", "y", None)]
        assert events[6:] == [("/b/2", "z", "y")]
        assert check([], consumer.history()).inconsistent == []
    finally:
        await writer.close()
        network.close()
