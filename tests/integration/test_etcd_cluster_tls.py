"""The operator against a TLS etcd cluster of three members (issue #20, audit rows 1.1/1.2):
client certificates required, and each member's certificate names only that member, by IP
address or by DNS name, as a production cluster's do. The client verifies every member
against its own name and, when the member in use or the etcd leader dies, goes on with the
next member: writes, keepalives and watches alike, losing no key.

Names without editing /etc/hosts: gRPC's default resolver (c-ares) resolves every name
under .localhost to loopback (RFC 6761), so the members are etcd-<i>.localhost on 127.0.0.1.
The IP members listen on 127.0.0.1, .2 and .3, which Linux routes to loopback unasked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from etcd_registrar.config import Settings
from etcd_registrar.doctor import Report, _etcd_checks
from etcd_registrar.etcd import Etcd, EtcdConfig, EtcdUnavailable, KeepAliveStream
from etcd_registrar.registry import Registry
from etcd_registrar.term import Term
from tests.harness import EtcdCluster, EtcdServer, TlsEtcdServer, built_etcd_path
from tests.integration.conftest import OWNER
from tests.integration.test_registry import endpoints
from tests.listeners import Setbacks
from tests.pki import Pki

pytestmark = pytest.mark.integration

ELECTION_S = 1.0  # etcd's default election timeout, which the members run with
BUDGET_S = ELECTION_S + 2.0  # the issue's bound on moving on after a member dies
KEY_TTL = 3  # keepalives every second: a lapse longer than the switch loses keys


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture(params=["ip", "name"])
def tls_cluster(request: pytest.FixtureRequest, pki: Pki) -> Iterator[EtcdCluster]:
    binary = built_etcd_path()
    if binary is None:
        pytest.fail("etcd 3.6 is not built: run `make tools`", pytrace=False)

    def member(i: int, directory: Path) -> EtcdServer:
        by_ip = request.param == "ip"
        server = TlsEtcdServer(
            pki,
            directory,
            binary,
            name=f"m{i}",
            host=f"127.0.0.{i + 1}" if by_ip else "127.0.0.1",
            address=None if by_ip else f"etcd-{i}.localhost",
        )
        server.heartbeat_ms, server.election_ms = 100, int(ELECTION_S * 1000)
        return server

    with EtcdCluster(make_member=member) as cluster:
        yield cluster


def client_config(pki: Pki, urls: list[str]) -> EtcdConfig:
    if not (pki.dir / "client.crt").exists():
        pki.issue("client", "registrar")
    return EtcdConfig(
        endpoints=tuple(urls),
        ca=pki.ca,
        cert=pki.dir / "client.crt",
        key=pki.dir / "client.key",
        timeout=2,
    )


def target(url: str) -> str:
    return url.split("://", 1)[1]


async def test_each_member_is_reached_and_checked_by_its_own_name(
    tls_cluster: EtcdCluster, pki: Pki
) -> None:
    urls = tls_cluster.endpoints
    for first in range(len(urls)):  # each member in turn the one in use
        etcd = Etcd(client_config(pki, urls[first:] + urls[:first]))
        try:
            await etcd.put(f"/services/goods/by-{first}", "1")
            assert etcd.member.target == target(urls[first])
            kvs, _ = await etcd.get_prefix("/services/goods/")
            assert len(kvs) == first + 1
        finally:
            await etcd.close()
    # Names are checked: member 0 at a name its certificate does not hold is refused, alone,
    # and among the others, which are used instead.
    wrong = f"https://wrong.localhost:{tls_cluster.members[0].client_port}"
    alone = Etcd(client_config(pki, [wrong]))
    among = Etcd(client_config(pki, [wrong, *urls[1:]]))
    try:
        with pytest.raises(EtcdUnavailable):
            await alone.ping("/services/")
        await among.ping("/services/")
        assert among.member.target == target(urls[1])
    finally:
        await alone.close()
        await among.close()


def spy_on_acks(etcd: Etcd) -> list[float]:
    """When each keepalive answer arrives, on whichever stream `etcd` opens."""
    acks: list[float] = []
    open_stream = etcd.keepalive_stream

    async def opened() -> KeepAliveStream:
        stream = await open_stream()
        receive = stream.receive

        async def timed() -> tuple[int, int]:
            answer = await receive()
            acks.append(time.monotonic())
            return answer

        stream.receive = timed  # type: ignore[method-assign]
        return stream

    etcd.keepalive_stream = opened  # type: ignore[method-assign]
    return acks


async def deletes(etcd: Etcd, prefix: str, revision: int, seen: list[str]) -> None:
    async for event in etcd.watch_prefix(prefix, revision + 1):
        if event.kind == "DELETE":
            seen.append(event.key)


async def test_writes_keepalives_and_watches_move_on_when_the_member_in_use_then_the_leader_dies(
    tls_cluster: EtcdCluster, pki: Pki
) -> None:
    # The client is given a follower, the leader, the other follower: the first kill hits
    # the member in use alone; the client goes on with the leader, and the second kill hits
    # both the member in use and the leader.
    leader = tls_cluster.leader()
    ordered = sorted(tls_cluster.members, key=lambda m: m is leader)
    ordered.insert(1, ordered.pop())
    config = client_config(pki, [m.endpoint for m in ordered])
    client = Etcd(config)
    registry = Registry(client, Term.alone(), Setbacks(), owner=OWNER)
    acks = spy_on_acks(client)
    watcher = Etcd(config)  # a consumer's watch, through the same failovers
    wanted = endpoints(30, ttl=KEY_TTL)
    await asyncio.wait_for(registry.start(), 20)
    await asyncio.wait_for(registry.submit(wanted[:10], []), 20)
    _, revision = await watcher.get_prefix("/services/")
    lost: list[str] = []
    watch = asyncio.create_task(deletes(watcher, "/services/", revision, lost))
    measured: list[str] = []
    try:
        for step, victim in enumerate(ordered[:2]):
            batch = wanted[10 * (step + 1) : 10 * (step + 2)]
            assert client.member.target == target(victim.endpoint)
            if step == 1:
                assert tls_cluster.leader() is victim, "leadership moved during the test"
            killed = time.monotonic()
            victim.kill()
            await asyncio.wait_for(registry.submit(batch, []), BUDGET_S + 5)
            wrote = time.monotonic() - killed
            while not [t for t in acks if t > killed]:
                assert time.monotonic() - killed < BUDGET_S + 5, "no keepalive answered"
                await asyncio.sleep(0.05)
            kept = min(t for t in acks if t > killed) - killed
            measured.append(f"{victim.name}: write {wrote:.2f} s, keepalive {kept:.2f} s")
            assert wrote <= BUDGET_S and kept <= BUDGET_S, measured
            assert client.member.target != target(victim.endpoint)
            if step == 0:  # on with the next member (after the leader died: any live one)
                assert client.member.target == target(ordered[1].endpoint)
                await asyncio.to_thread(victim.start)  # the quorum must outlive the next kill
        # Over three TTLs after the last kill, every key stays: the leases were kept alive.
        await asyncio.sleep(3 * KEY_TTL)
        kvs, _ = await watcher.get_prefix("/services/")
        assert {kv.key for kv in kvs} == {e.key for e in wanted}
        assert lost == [], f"keys deleted: {lost}"
        assert not watch.done()
        print(f"\nfailover over {len(ordered)} TLS members: {'; '.join(measured)}")
    finally:
        watch.cancel()
        await registry.close()
        await watcher.close()


@pytest.mark.parametrize("tls_cluster", ["name"], indirect=True)
async def test_doctor_names_the_member_that_does_not_answer(
    tls_cluster: EtcdCluster, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    config = client_config(pki, tls_cluster.endpoints)
    settings = Settings(
        etcd_endpoints=list(config.endpoints),
        etcd_ca=config.ca,
        etcd_cert=config.cert,
        etcd_key=config.key,
        etcd_timeout=2,
        owner_id=OWNER,
    )
    leader = tls_cluster.leader()
    down = next(m for m in tls_cluster.members if m is not leader)  # no election: no waiting
    up = [m for m in tls_cluster.members if m is not down]
    down.kill()
    report = Report()
    await _etcd_checks(report, settings)
    out = capsys.readouterr().out
    assert "ok    etcd reachable at " in out and "ok    etcd lease and write: " in out
    for member in up:
        assert f"ok    etcd member {member.endpoint}: answers" in out
    assert f"FAIL  etcd member {down.endpoint}: " in out
    assert f"its certificate names {urlsplit(down.endpoint).hostname}" in out
    assert report.failures == 1, out
