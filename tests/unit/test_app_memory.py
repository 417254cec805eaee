"""The composition root on the in-memory etcd (verified by tests/etcd_contract.py): a
replica is elected, leads through its term, steps down when etcd refuses its write as
fenced, is elected again, and resigns on stop; no etcd process, no cluster (its Kubernetes
client points nowhere, so the pod watch only retries)."""

from __future__ import annotations

import pytest

from etcd_registrar.app import App
from etcd_registrar.config import Settings
from etcd_registrar.election import leader_key
from etcd_registrar.etcd import DeleteOp
from etcd_registrar.memory import MemoryEtcd
from tests.aio import eventually
from tests.harness import no_api
from tests.unit.builders import opt_in, pod_body
from tests.unit.memory_pipeline import values

LEADER = leader_key("t")


@pytest.fixture
def settings() -> Settings:
    return Settings(owner_id="t", health_port=0, metrics_port=0)


async def test_a_replica_leads_steps_down_when_fenced_and_resigns(settings: Settings) -> None:
    etcd = MemoryEtcd()
    app = App.create(settings, no_api, etcd=etcd)
    await app.start()
    app.controller.view_complete.set()  # no API server here: its pod view is complete at once
    try:
        await eventually(lambda: app.term.leading, 10, "the replica leads")
        first = (await etcd.get_many([LEADER]))[LEADER].create_revision
        committed = app.controller.on_pod(None, pod_body(annotations=opt_in())).committed
        assert committed is not None
        await committed
        assert await values(etcd) == {"/services/goods/goods-abc": "10.0.0.5:8080"}

        await etcd.txn([DeleteOp(LEADER)])  # deposed behind its back
        app.on_pod("MODIFIED", pod_body(annotations=opt_in(), ip="10.0.0.6"))
        await eventually(lambda: not app.election.leading, 5, "the election steps down")
        assert "refused" in app.term.reason
        assert await values(etcd) == {"/services/goods/goods-abc": "10.0.0.5:8080"}

        await eventually(lambda: app.term.leading, 10, "elected again")
        again = (await etcd.get_many([LEADER]))[LEADER].create_revision
        assert again > first
    finally:
        await app.stop()
    assert await etcd.get_many([LEADER]) == {}  # resigned: a standby need not wait


async def test_a_dry_run_leads_alone_and_campaigns_for_nothing(settings: Settings) -> None:
    etcd = MemoryEtcd()
    app = App.create(settings.model_copy(update={"dry_run": True}), no_api, etcd=etcd)
    await app.start()
    try:
        await eventually(lambda: app.term.leading, 5, "the dry run leads")
        assert await etcd.get_many([LEADER]) == {}
    finally:
        await app.stop()
