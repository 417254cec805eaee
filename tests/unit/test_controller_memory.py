"""The controller on the in-memory etcd: pod events to keys, conflicts, a standby, and the
registry's setbacks coming back to it by the constructor's wiring; no etcd, no cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from etcd_registrar.controller import Controller
from etcd_registrar.memory import MemoryEtcd
from etcd_registrar.term import Term
from tests.listeners import posted
from tests.unit.builders import opt_in, pod_body, registration_body
from tests.unit.memory_pipeline import memory_controller, values

KEY = "/services/goods/goods-abc"


@pytest.fixture
def etcd() -> MemoryEtcd:
    return MemoryEtcd()


@pytest.fixture
async def controller(etcd: MemoryEtcd) -> AsyncIterator[Controller]:
    controller = memory_controller(etcd, Term.alone())
    await controller.registry.start()
    yield controller
    await controller.registry.close()


async def apply(controller: Controller, *events: tuple[str | None, dict[str, Any]]) -> None:
    for kind, body in events:
        outcome = controller.on_pod(kind, body)
        if outcome.committed is not None:
            await outcome.committed


@pytest.mark.parametrize(
    ("events", "keys"),
    [
        ([(None, pod_body(annotations=opt_in()))], {KEY: "10.0.0.5:8080"}),
        ([(None, pod_body(annotations=opt_in(), ready=False))], {}),
        ([(None, pod_body(annotations=opt_in(port="nope")))], {}),
        ([(None, pod_body())], {}),  # not opted in
        (
            [
                (None, pod_body(annotations=opt_in())),
                ("MODIFIED", pod_body(annotations=opt_in(), ip="10.0.0.6")),
            ],
            {KEY: "10.0.0.6:8080"},
        ),
        (
            [
                (None, pod_body(annotations=opt_in())),
                ("MODIFIED", pod_body(annotations=opt_in(), ready=False)),
            ],
            {},
        ),
        (
            [
                (None, pod_body(annotations=opt_in())),
                ("MODIFIED", pod_body(annotations=opt_in(), deleting=True)),
            ],
            {},
        ),
        ([(None, pod_body(annotations=opt_in())), ("DELETED", pod_body())], {}),
    ],
    ids=[
        "ready",
        "unready",
        "invalid-port",
        "not-opted-in",
        "ip-change",
        "turns-unready",
        "terminating",
        "deleted",
    ],
)
async def test_pod_events_become_keys(
    controller: Controller,
    etcd: MemoryEtcd,
    events: list[tuple[str | None, dict[str, Any]]],
    keys: dict[str, str],
) -> None:
    await apply(controller, *events)
    assert await values(etcd) == keys


async def test_the_older_pod_keeps_a_shared_key_and_the_younger_is_told_once(
    controller: Controller, etcd: MemoryEtcd
) -> None:
    controller.on_registration("ADDED", registration_body({"key": "{prefix}/{service}/leader"}))
    old = pod_body(name="old", created="2024-01-01T00:00:00Z", annotations=opt_in())
    young = pod_body(name="young", created="2024-01-01T00:01:00Z", annotations=opt_in())
    warned = [
        n
        for kind, body in ((None, old), (None, young), ("MODIFIED", young))
        for n in controller.on_pod(kind, body).now
    ]
    await controller.registry.writes.drained.wait()
    assert await values(etcd) == {"/services/goods/leader": "10.0.0.5:8080"}
    assert [(n.reason, n.pod["metadata"]["name"]) for n in warned] == [("Conflict", "young")]


async def test_a_standby_writes_nothing_until_its_term_begins(etcd: MemoryEtcd) -> None:
    term = Term()
    controller = memory_controller(etcd, term)
    await controller.registry.start()
    try:
        await apply(controller, (None, pod_body(annotations=opt_in())))
        assert await values(etcd) == {}
        term.begin(None)
        controller.took_over()
        await apply(controller, ("MODIFIED", pod_body(annotations=opt_in())))
        assert await values(etcd) == {KEY: "10.0.0.5:8080"}
    finally:
        await controller.registry.close()


async def test_keys_of_a_lost_lease_are_written_again(
    controller: Controller, etcd: MemoryEtcd
) -> None:
    await apply(controller, (None, pod_body(annotations=opt_in())))
    lost = controller.registry.held[KEY].lease
    await etcd.revoke(lost)
    await controller.registry.refresh_view([KEY])  # finds the lease gone: re-plans its keys
    await controller.registry.writes.drained.wait()
    kv = (await etcd.get_many([KEY]))[KEY]
    assert kv.value == "10.0.0.5:8080" and kv.lease != lost


async def test_a_key_another_writer_holds_is_reported_not_overwritten(
    controller: Controller, etcd: MemoryEtcd
) -> None:
    await etcd.put(KEY, "theirs")
    await apply(controller, (None, pod_body(annotations=opt_in())))
    await controller.registry.writes.drained.wait()
    assert await values(etcd) == {KEY: "theirs"}
    assert KEY in controller.taken
    (warning,) = posted(controller).notices
    assert warning.reason == "Conflict" and "not overwritten" in warning.message
