"""The registry etcd's faults (issue #22), under churn, judged by the checker: no stale or
missing key longer than the fault plus one resync, no resurrection, no DELETE of a ready
pod's key (except where lease expiry is the designed outcome: etcd frozen past the TTL),
converged within one resync, nothing left behind. The quick cases run in `make test`; the
`faults` ones in `make faults`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aetcd import rpc

from etcd_registrar.etcd import Etcd, EtcdConfig
from tests.faults.scenario import Run, churning, leader, resync
from tests.harness import EtcdCluster, EtcdServer, built_etcd_path, wait_for

pytestmark = pytest.mark.integration

TTL = 5  # renewals sent to a member that just lost its leader are lost for about a second
FROZEN_TTL = 2  # the frozen etcd outlives it three times


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    """Three etcd 3.6 members (the version most users run) on loopback."""
    binary = built_etcd_path()
    if binary is None:
        pytest.fail("etcd 3.6 is not built: run `make tools`", pytrace=False)
    with EtcdCluster(etcd_bin=binary) as etcd:
        yield etcd


def judged(run: Run) -> None:
    assert run.report is not None
    assert run.report.violations(run.windows, resync(TTL)) == []


async def until_healthy(member: EtcdServer) -> None:
    await asyncio.to_thread(member.wait_healthy)


async def test_the_leader_killed(cluster: EtcdCluster) -> None:
    async with (
        churning(cluster.endpoints, cluster.endpoints, TTL) as run,
        run.fault("etcd leader kill -9"),
    ):
        victim = leader(cluster)
        victim.kill()
        await asyncio.sleep(2)  # the others elect a leader and serve meanwhile
        victim.launch()
        await until_healthy(victim)
    judged(run)


async def test_a_compaction_while_everyone_watches(cluster: EtcdCluster) -> None:
    etcd = Etcd(EtcdConfig(endpoints=tuple(cluster.endpoints)))
    try:
        async with (
            churning(cluster.endpoints, cluster.endpoints, TTL) as run,
            run.fault("compaction"),
        ):
            for _ in range(4):
                _, revision = await etcd.get_prefix("/")
                await etcd.kv.Compact(rpc.CompactionRequest(revision=revision, physical=True))
                await asyncio.sleep(0.5)
    finally:
        await etcd.close()
    judged(run)


@pytest.mark.faults
async def test_the_leader_partitioned(cluster: EtcdCluster) -> None:
    async with (
        churning(cluster.endpoints, cluster.endpoints, TTL) as run,
        run.fault("etcd leader partitioned"),
    ):
        victim = leader(cluster)
        cluster.partition(victim)
        await asyncio.to_thread(
            wait_for, lambda: not victim.healthy(), 10, message="the member lost its leader"
        )
        await asyncio.sleep(3)
        cluster.heal(victim)
        await until_healthy(victim)
    judged(run)


@pytest.mark.faults
async def test_a_rolling_restart_of_all_members(cluster: EtcdCluster) -> None:
    async with (
        churning(cluster.endpoints, cluster.endpoints, TTL) as run,
        run.fault("rolling restart of 3 members"),
    ):
        for member in cluster.members:
            await asyncio.to_thread(member.restart)
            await asyncio.gather(*(until_healthy(m) for m in cluster.members))
    judged(run)


@pytest.mark.faults
async def test_etcd_frozen_past_the_ttl(etcd_server: EtcdServer) -> None:
    """SIGSTOP etcd for three lease TTLs. On SIGCONT etcd expires the leases whose renewals
    it did not see, so a consumer sees ready pods' keys deleted: the designed outcome of
    lease expiry. The registry puts them back; the checker measures for how long they were
    missing (docs/reliability.md states it as a bound)."""
    endpoint = [etcd_server.endpoint]
    async with (
        churning(endpoint, endpoint, FROZEN_TTL) as run,
        run.fault("etcd frozen 3 TTLs", expiry=True),
    ):
        etcd_server.pause()
        await asyncio.sleep(3 * FROZEN_TTL)
        etcd_server.resume()
    assert run.report is not None
    assert run.report.violations(run.windows, resync(FROZEN_TTL)) == []
