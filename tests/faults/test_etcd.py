"""The registry etcd's faults (issue #22), under churn, judged by the checker: no stale or
missing key longer than the fault plus one resync, no resurrection, no DELETE of a ready
pod's key (except where lease expiry is the designed outcome: etcd frozen past the TTL),
converged within one resync, nothing left behind. The quick cases run in `make test`; the
`faults` ones in `make faults`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aetcd import rpc

from etcd_registrar.etcd import Etcd, EtcdConfig
from tests.faults.proxy import SlowLink
from tests.faults.scenario import Run, churning, leader, resync, save_row
from tests.harness import EtcdCluster, EtcdServer, built_etcd_path, wait_for

pytestmark = pytest.mark.integration

TTL = 5  # renewals sent to a member that just lost its leader are lost for about a second
FROZEN_TTL = 2  # the frozen etcd outlives it three times


@pytest.fixture
def members3() -> Iterator[EtcdCluster]:
    """Three etcd 3.6 members (the version most users run) on loopback."""
    binary = built_etcd_path()
    if binary is None:
        pytest.fail("etcd 3.6 is not built: run `make tools`", pytrace=False)
    with EtcdCluster(etcd_bin=binary) as etcd:
        yield etcd


def judged(run: Run, ttl: int = TTL, **extra: object) -> None:
    """Record the run's numbers ($FAULTS_REPORT), then hold it to the bounds."""
    assert run.report is not None
    save_row(run.report, run.windows, run.consumer, **extra)
    assert run.report.violations(run.windows, resync(ttl)) == []


@asynccontextmanager
async def one_fault(
    endpoints: list[str], name: str, ttl: int = TTL, *, expiry: bool = False
) -> AsyncIterator[None]:
    """The block is one fault, under churn, with operator and consumer on `endpoints`;
    judged when it is over."""
    async with churning(endpoints, endpoints, ttl) as run, run.fault(name, expiry=expiry):
        yield
    judged(run, ttl)


async def until_healthy(member: EtcdServer) -> None:
    await asyncio.to_thread(member.wait_healthy)


async def test_the_leader_killed(members3: EtcdCluster) -> None:
    async with one_fault(members3.endpoints, "etcd leader kill -9"):
        victim = leader(members3)
        victim.kill()
        await asyncio.sleep(2)  # the others elect a leader and serve meanwhile
        victim.launch()
        await until_healthy(victim)


async def test_a_compaction_while_everyone_watches(members3: EtcdCluster) -> None:
    etcd = Etcd(EtcdConfig(endpoints=tuple(members3.endpoints)))
    try:
        async with one_fault(members3.endpoints, "compaction"):
            for _ in range(4):
                _, revision = await etcd.get_prefix("/")
                await etcd.member.kv.Compact(
                    rpc.CompactionRequest(revision=revision, physical=True)
                )
                await asyncio.sleep(0.5)
    finally:
        await etcd.close()


@pytest.mark.faults
async def test_the_leader_partitioned(members3: EtcdCluster) -> None:
    async with one_fault(members3.endpoints, "etcd leader partitioned"):
        victim = leader(members3)
        members3.partition(victim)
        await asyncio.to_thread(
            wait_for, lambda: not victim.healthy(), 10, message="the member lost its leader"
        )
        await asyncio.sleep(3)
        members3.heal(victim)
        await until_healthy(victim)


@pytest.mark.faults
async def test_a_rolling_restart_of_all_members(members3: EtcdCluster) -> None:
    async with one_fault(members3.endpoints, "rolling restart of 3 members"):
        for member in members3.members:
            await asyncio.to_thread(member.restart)
            await asyncio.gather(*(until_healthy(m) for m in members3.members))


@pytest.mark.faults
async def test_etcd_frozen_past_the_ttl(etcd_server: EtcdServer) -> None:
    """SIGSTOP etcd for three lease TTLs. On SIGCONT etcd expires the leases whose renewals
    it did not see, so a consumer sees ready pods' keys deleted: the designed outcome of
    lease expiry. The registry puts them back; the checker measures for how long they were
    missing (docs/reliability.md states it as a bound)."""
    async with one_fault([etcd_server.endpoint], "etcd frozen 3 TTLs", FROZEN_TTL, expiry=True):
        etcd_server.pause()
        await asyncio.sleep(3 * FROZEN_TTL)
        etcd_server.resume()


@pytest.mark.faults
async def test_a_slow_then_lossy_link_to_etcd(etcd_server: EtcdServer) -> None:
    """Between the operator and etcd: 200 ms each way; then every connection dropped twice a
    second (transactions in flight included) for longer than the TTL; then both at once,
    which lets no call finish (a new connection needs more than 0.5 s): an outage, after
    which lease expiry is the designed outcome. The consumer reads etcd directly."""
    link = SlowLink(etcd_server.client_port)

    async def dropping(seconds: float) -> None:
        for _ in range(int(seconds / 0.5)):
            await asyncio.sleep(0.5)
            link.drop()

    try:
        async with churning([link.url], [etcd_server.endpoint], TTL) as run:
            async with run.fault("200 ms latency"):
                link.delay = 0.2
                await asyncio.sleep(5)
            link.delay = 0.0
            async with run.fault("connections dropped every 0.5 s"):
                await dropping(1.5 * TTL)
            async with run.fault("200 ms latency, drops every 0.5 s", expiry=True):
                link.delay = 0.2
                await dropping(4)
                link.delay = 0.0
    finally:
        link.close()
    judged(run)


def rss_mib() -> float:
    """This process' resident memory (the operator's etcd half runs in it)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.faults
async def test_etcd_gone_for_two_minutes(etcd_server: EtcdServer) -> None:
    """etcd down for 2 minutes under steady churn: memory stays flat (the writes queue holds
    the latest state of each key, not every change), and everything converges after."""
    endpoint = [etcd_server.endpoint]
    async with churning(endpoint, endpoint, TTL) as run:
        before = rss_mib()
        async with run.fault("etcd down 2 minutes"):
            etcd_server.kill()
            await asyncio.sleep(60)
            during = rss_mib()
            await asyncio.sleep(60)
            await asyncio.to_thread(etcd_server.start)
    after = rss_mib()
    judged(run, rss_mib=[round(before), round(during), round(after)])
    assert max(during, after) < before + 20, f"RSS {before:.0f} -> {during:.0f} -> {after:.0f} MiB"
