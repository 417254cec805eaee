"""Operations (issue #4) at component level, against a real etcd: etcd request metrics, the
dry run, and the liveness rule. The same behaviour through the real process and cluster is
in tests/e2e/test_operations.py."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from bench.procs import etcd_requests
from etcd_registrar import kube
from etcd_registrar.app import App
from etcd_registrar.config import Settings
from etcd_registrar.dryrun import DryRunEtcd
from etcd_registrar.election import leader_key
from etcd_registrar.etcd import Etcd, EtcdConfig, EtcdError, PutOp
from etcd_registrar.registry import Registry
from etcd_registrar.term import Term
from tests.aio import eventually, holds
from tests.harness import EtcdServer, free_port
from tests.integration.conftest import OWNER
from tests.listeners import Setbacks
from tests.unit.builders import endpoint

pytestmark = pytest.mark.integration

REQUESTS = "etcd_registrar_etcd_request_duration_seconds_count"
ERRORS = "etcd_registrar_etcd_request_errors_total"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def errors(operation: str) -> dict[str, float]:
    """Failed requests of `operation` by gRPC status code."""
    return {
        s.labels["code"]: s.value
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == ERRORS and s.labels["operation"] == operation
    }


async def test_every_etcd_request_is_timed_and_failures_counted_by_operation(
    etcd_server: EtcdServer,
) -> None:
    etcd = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,), timeout=1))
    operations = [
        *("txn", "get", "range", "ping"),
        *("lease_grant", "lease_time_to_live", "lease_revoke"),
    ]
    before = {op: sample(REQUESTS, operation=op) for op in [*operations, "status"]}
    try:
        await etcd.txn([PutOp("/t/a", "1")])
        await etcd.get_many(["/t/a"])
        await etcd.get_prefix("/t/")
        await etcd.ping("/t/a")
        lease = await etcd.grant(5)
        await etcd.time_to_live(lease)
        await etcd.revoke(lease)
        for op in operations:
            assert sample(REQUESTS, operation=op) == before[op] + 1, op
        failed = errors("status")
        etcd_server.kill()
        with pytest.raises(EtcdError):
            await etcd.version()
        now = errors("status")
        grown = {code for code in now if now[code] > failed.get(code, 0)}
        assert sum(now.values()) == sum(failed.values()) + 1
        assert grown <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, now  # labelled by gRPC code
        assert sample(REQUESTS, operation="status") == before["status"] + 1  # failures timed too
    finally:
        await etcd.close()


async def test_dry_run_writes_nothing_and_logs_each_write_once(
    etcd_server: EtcdServer, reader: Etcd, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(
        DryRunEtcd(EtcdConfig(endpoints=(etcd_server.endpoint,))), Term.alone(), Setbacks()
    )
    await registry.start()
    wanted = [endpoint(f"/services/goods/goods-{i}", pod=f"goods-{i}") for i in range(3)]
    try:
        with caplog.at_level(logging.INFO, logger="etcd_registrar.registry"):
            await registry.submit(wanted, [])
            await registry.refresh_view(e.key for e in wanted)  # a sweep: nothing to repair
            assert registry.current_many(e.key for e in wanted).keys() == {e.key for e in wanted}
            await registry.submit([], [wanted[0].key])
        assert (await reader.get_prefix("/"))[0] == []  # no key, no lease record
        lines = [r for r in caplog.records if hasattr(r, "key")]
        puts = [r for r in lines if r.getMessage().startswith("dry-run: would put")]
        assert sorted(vars(r)["key"] for r in puts) == sorted(e.key for e in wanted)  # once each
        (delete,) = [r for r in lines if r.getMessage().startswith("dry-run: would delete")]
        assert vars(delete)["key"] == wanted[0].key
        by_key = {e.key: e for e in wanted}
        for record in [*puts, delete]:
            fields = tuple(vars(record)[name] for name in ("key", "pod", "namespace", "service"))
            assert fields == (fields[0], by_key[fields[0]].pod_name, "shop", "goods")
            for text in fields:
                assert text in record.getMessage()  # the text log names them too
    finally:
        await registry.close()


async def test_dry_run_never_keeps_a_live_operators_leases_alive(
    etcd_server: EtcdServer, reader: Etcd
) -> None:
    """A dry run with the same owner id adopts the leases (to diff against reality), but a
    keepalive is a write: once the real operator is gone, the keys must expire."""
    ttl = 2
    live = Registry(
        Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,))),
        Term.alone(),
        Setbacks(),
        owner="shared",
    )
    await live.start()
    await live.submit([endpoint("/services/goods/goods-a", ttl=ttl)], [])
    dry = Registry(
        DryRunEtcd(EtcdConfig(endpoints=(etcd_server.endpoint,))),
        Term.alone(),
        Setbacks(),
        owner="shared",
    )
    await dry.start()
    try:
        assert set(dry.held) == {"/services/goods/goods-a"}  # adopted
        await live.close()  # the real operator goes, without revoking

        async def expired() -> bool:
            return (await reader.get_prefix("/"))[0] == []

        await eventually(expired, 3 * ttl + 3, "keys and lease record expire despite the dry run")
    finally:
        await dry.close()


@pytest.fixture
def unreachable_api(tmp_path: Path) -> Any:
    """A client of an API server nobody listens on: every Kubernetes call fails fast."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "gone",
                "cluster": {
                    "server": f"https://127.0.0.1:{free_port()}",
                    "insecure-skip-tls-verify": True,
                },
            }
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "gone", "user": "u"}}],
        "current-context": "c",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return functools.partial(kube.login, path)


async def test_liveness_fails_when_an_operator_loop_stops(
    etcd_server: EtcdServer, unreachable_api: Any
) -> None:
    """Every loop the liveness rule names runs in the real operator (a renamed task would fail
    here, not restart operators in production); one that stops makes /healthz fail."""
    settings = Settings(
        etcd_endpoints=[etcd_server.endpoint], owner_id="live", health_port=0, metrics_port=0
    )
    app = App.create(settings, unreachable_api)
    assert app.health.live() == (True, "starting")
    await app.start()
    try:
        assert app.health.live() == (True, "ok")
        (writer,) = [t for t in asyncio.all_tasks() if t.get_name() == "etcd-writer"]
        writer.cancel()  # stands in for a loop that crashed: the task is over
        await asyncio.wait([writer])
        assert app.health.live() == (False, "operator loop failing: etcd-writer stopped")
        # and readiness does not hide it: the view never completed (the API is unreachable);
        # the first etcd check runs concurrently, so it may not have answered yet
        await eventually(lambda: app.health.etcd.reachable, 10, "etcd check answered")
        assert app.health.ready() == (False, "initial pod view incomplete")
    finally:
        await app.stop()


async def test_a_dry_run_operator_leads_alone_and_only_records_its_writes(
    etcd_server: EtcdServer, reader: Etcd, unreachable_api: Any
) -> None:
    """The dry run campaigns for nothing (it must not depose a leader), yet its registry
    leads: every write goes to the recording adapter and is held in the simulated view."""
    settings = Settings(
        etcd_endpoints=[etcd_server.endpoint],
        owner_id="dry",
        health_port=0,
        metrics_port=0,
        dry_run=True,
    )
    app = App.create(settings, unreachable_api)
    await app.start()
    try:
        await eventually(lambda: app.term.leading, 5, "the dry run's registry leads")
        wanted = endpoint("/services/goods/goods-a")
        await asyncio.wait_for(app.registry.submit([wanted], []), 5)
        assert app.registry.held.keys() == {wanted.key}
        app.claims.record("/services/goods/", "shop")  # the claims go through the adapter too
        await eventually(app.claims.load, 5, "the claim recorded in the simulated view")
        assert (await reader.get_prefix("/"))[0] == []  # no key, no lease record, no claim
    finally:
        await app.stop()
    assert app.registry.idle


def requests_by_method(etcd_server: EtcdServer) -> Counter[str]:
    """The gRPC messages etcd received so far, by method (each keepalive is one)."""
    return Counter(etcd_requests(etcd_server.listen_url))


async def test_a_replica_campaigns_only_once_its_pod_view_is_complete(
    etcd_server: EtcdServer, reader: Etcd, unreachable_api: Any
) -> None:
    """A fresh replica that has not listed the pods yet never leads: its first sweep would
    delete the keys of every pod it has not seen."""
    settings = Settings(
        etcd_endpoints=[etcd_server.endpoint], owner_id="fresh", health_port=0, metrics_port=0
    )
    app = App.create(settings, unreachable_api)
    await app.start()
    key = leader_key("fresh")
    try:
        await eventually(lambda: app.health.etcd.reachable, 10, "etcd check answered")

        async def standing_by() -> bool:
            return not app.election.leading and key not in await reader.get_many([key])

        await holds(standing_by, 2 * app.election.ttl, "it campaigned with an incomplete view")
        app.controller.view_complete.set()  # the initial pod list is in
        await eventually(lambda: app.election.leading, 10, "it campaigns once its view is complete")
    finally:
        await app.stop()


async def test_a_standby_reads_the_lease_records_only_when_they_change(
    etcd_server: EtcdServer, registry: Registry
) -> None:
    """A standby learns the leases the leader records, then watches the records instead of
    reading them again: while they stay as they are, etcd hears from it only keepalives;
    a lease the leader records next ends the wait, for the standby to read them again."""
    etcd = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
    standby = Registry(etcd, Term(), Setbacks(), owner=OWNER)  # its term never begins
    await standby.start()

    def followed() -> bool:
        return registry.leases.by_id.keys() <= standby.leases.by_id.keys()

    await asyncio.wait_for(registry.submit([endpoint("/services/goods/goods-a")], []), 5)
    follow = asyncio.create_task(standby.follow())
    try:
        await eventually(followed, 5, "the standby renews the leader's lease")
        before = requests_by_method(etcd_server)
        await asyncio.sleep(2.0)  # the window measured
        added = requests_by_method(etcd_server) - before
        assert set(added) <= {"LeaseKeepAlive"}, added
        assert not follow.done(), "the standby stopped watching the records"
        other = endpoint("/services/toys/toys-a", ttl=20)  # another pool: a new lease
        await asyncio.wait_for(registry.submit([other], []), 5)
        await asyncio.wait_for(follow, 5)  # the new record ended the wait
        follow = asyncio.create_task(standby.follow())
        await eventually(followed, 5, "the standby renews the new lease too")
    finally:
        follow.cancel()
        await standby.close()
