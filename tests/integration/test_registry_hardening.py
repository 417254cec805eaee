"""The registry under hostile input and odd etcd answers (issue #10), on a real etcd: one bad
write fails alone, another writer's key is never overwritten or deleted, adoption trusts no
record, and nothing here can stop the writer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from etcd_registrar.etcd import Etcd, EtcdConfig, LeaseInfo
from etcd_registrar.leases import lease_records
from etcd_registrar.registry import Registry
from etcd_registrar.term import Term
from tests.aio import eventually
from tests.harness import EtcdServer
from tests.integration.conftest import OWNER
from tests.integration.test_registry import endpoints
from tests.listeners import Setbacks, setbacks

pytestmark = pytest.mark.integration


async def values(reader: Etcd) -> dict[str, str]:
    return {kv.key: kv.value for kv in (await reader.get_prefix("/services/"))[0]}


async def test_a_value_the_client_cannot_encode_fails_alone(
    registry: Registry, reader: Etcd
) -> None:
    """The poison pill that used to kill the writer for every tenant: it fails alone, the
    126 keys batched with it are written, and the writer goes on writing."""
    batch = endpoints(127)
    poison = replace(batch[60], value='{"k":"\ud800"}')
    await registry.submit([*batch[:60], poison, *batch[61:]], [])
    assert [write.key for write, _ in setbacks(registry).refused] == [poison.key]
    assert set(await values(reader)) == {e.key for e in batch} - {poison.key}
    later = endpoints(130)[127:]
    await registry.submit(later, [])
    assert {e.key for e in later} <= set(await values(reader))
    assert all(loop.failing is None for loop in registry.loops)


async def test_a_write_etcd_refuses_fails_alone(registry: Registry, reader: Etcd) -> None:
    """etcd refuses one op (a 3 MiB value, over its request limit): that key is reported,
    the others of its batch land."""
    batch = endpoints(20)
    huge = replace(batch[7], value="x" * 3 * 1024 * 1024)
    await registry.submit([*batch[:7], huge, *batch[8:]], [])
    refused = setbacks(registry).refused
    assert [write.key for write, _ in refused] == [huge.key], refused
    assert set(await values(reader)) == {e.key for e in batch} - {huge.key}


async def test_a_key_another_writer_holds_is_not_overwritten(
    registry: Registry, reader: Etcd
) -> None:
    taken = setbacks(registry).taken
    wanted = endpoints(3)
    await reader.put(wanted[1].key, "the other writer's value")
    await registry.submit(wanted, [])
    assert (await values(reader))[wanted[1].key] == "the other writer's value"
    assert taken == [{wanted[1].key}]
    current = registry.current(wanted[1].key)
    assert current is not None and current.pool is None  # known as another writer's
    assert {wanted[0].key, wanted[2].key} <= registry.held.keys()


async def test_a_put_then_delete_in_one_tick_spares_another_writers_key(
    registry: Registry, reader: Etcd
) -> None:
    """A put replaced by a delete before it was sent must not become an unguarded delete."""
    key = endpoints(1)[0]
    await reader.put(key.key, "foreign")
    registry.submit([key], [])
    await registry.submit([], [key.key])
    assert await values(reader) == {key.key: "foreign"}


async def test_adoption_trusts_no_record(
    etcd_server: EtcdServer, registry: Registry, reader: Etcd
) -> None:
    """Records a tenant could once forge under the bookkeeping prefix are skipped, one by
    one; the operator starts and adopts the good ones (an infinite ttl made it crash-loop)."""
    wanted = endpoints(5)
    await registry.submit(wanted, [])
    await registry.close()
    prefix = lease_records(OWNER)
    forged = {
        "infinite-ttl": '{"namespace": "a", "service": "x", "ttl": 1e999}',
        "not-json": "10.0.0.1:80",
        "deep": "[" * 5000 + "]" * 5000,
        "wrong-ttl": '{"namespace": "a", "service": "x", "ttl": 3600}',
        "extra-field": '{"namespace": "a", "service": "x", "ttl": 10, "keys": 1}',
    }
    for name, value in forged.items():
        lease = await reader.grant(10)
        key = f"{prefix}{lease:x}" if name != "extra-field" else f"{prefix}{name}"
        await reader.put(key, value, lease)
    successor = Registry(
        Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,))), Term.alone(), Setbacks(), owner=OWNER
    )
    await asyncio.wait_for(successor.start(), 10)
    try:
        assert set(successor.held) == {e.key for e in wanted}
        assert {lease.pool for lease in successor.leases.by_id.values()} == {("shop", "goods", 2)}
    finally:
        await successor.close()


async def test_a_live_lease_with_under_a_second_left_is_alive(reader: Etcd) -> None:
    """etcd rounds the remaining TTL down: 0 is a live lease, -1 a lost one."""
    lease = await reader.grant(2)
    info = await eventually(
        lambda: _ttl_reads(reader, lease, 0), 3, "the lease read TTL 0 before it expired"
    )
    assert info.alive
    gone = await eventually(lambda: _ttl_reads(reader, lease, -1), 5, "the lease expired")
    assert not gone.alive


async def _ttl_reads(reader: Etcd, lease: int, ttl: int) -> LeaseInfo | None:
    info = await reader.time_to_live(lease)
    return info if info.ttl == ttl else None


async def test_refused_writes_are_reported_with_the_write(registry: Registry) -> None:
    bad = replace(endpoints(1)[0], value="\x00" * 3 * 1024 * 1024)
    await registry.submit([bad], [])
    assert [(w.key, w.pod) for w, _ in setbacks(registry).refused] == [(bad.key, bad.pod_name)]
    assert json.dumps(registry.current_many([bad.key])) == "{}"


async def test_a_value_that_is_not_utf8_breaks_no_read(
    etcd_server: EtcdServer, registry: Registry, reader: Etcd
) -> None:
    """A legacy writer's binary value at a key a pod wants: the sweep's re-read, `ls` and
    `watch` read it (escaped) instead of aborting."""
    key = "/services/goods/pod-0"
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    await asyncio.to_thread(
        subprocess.run,
        ["etcdctl", f"--endpoints={etcd_server.endpoint}", "put", key, "\udcff\udcfe"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    await registry.refresh_view([key])  # aborted every sweep with UnicodeDecodeError
    current = registry.current(key)
    assert current is not None and current.pool is None and "\\xff" in current.value
    kvs, _ = await reader.get_prefix("/services/")
    assert [kv.value for kv in kvs] == ["\\xff\\xfe"]


def test_ls_lists_the_good_records_and_names_the_bad(etcd_server: EtcdServer) -> None:
    async def setup() -> None:
        etcd = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
        registry = Registry(etcd, Term.alone(), Setbacks(), owner=OWNER)
        await registry.start()
        await registry.submit(endpoints(1), [])
        await registry.close()
        client = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
        lease = await client.grant(30)
        await client.put(f"{lease_records(OWNER)}{lease:x}", "10.0.0.1:80", lease)  # forged
        await client.close()

    asyncio.run(setup())
    done = subprocess.run(
        [sys.executable, "-m", "etcd_registrar", "ls", "--owner-id", OWNER,
         "--etcd-endpoints", etcd_server.endpoint],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "/services/goods/pod-0" in done.stdout
    assert "skipped" in done.stderr and "not {namespace, service, ttl}" in done.stderr


def test_ls_of_an_owner_id_holding_nothing_lists_the_owner_ids_present(
    etcd_server: EtcdServer,
) -> None:
    """Row 1.3 of the ecosystem audit: `ls` from a workstation defaults to owner id
    `default`, the chart's is another: say which ones hold something, not an empty table."""

    async def setup() -> None:
        registry = Registry(
            Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,))),
            Term.alone(),
            Setbacks(),
            owner=OWNER,
        )
        await registry.start()
        await registry.submit(endpoints(1), [])
        await registry.close()

    asyncio.run(setup())
    done = subprocess.run(
        [sys.executable, "-m", "etcd_registrar", "ls", "--etcd-endpoints", etcd_server.endpoint],
        capture_output=True, text=True, check=False, timeout=60,
        env=os.environ | {"ETCD_REGISTRAR_OWNER_ID": "default"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "'default' holds nothing" in done.stderr and f"{OWNER} (1 lease)" in done.stderr
