"""What the readiness gate says about a pod (gates.verdict), from a real controller and
registry on the in-memory etcd (verified by tests/etcd_contract.py): True only once etcd
has committed the key, False with the reason; and which replica tells what."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from etcd_registrar.controller import Controller
from etcd_registrar.gates import Gates, Verdict, verdict
from etcd_registrar.memory import MemoryEtcd
from etcd_registrar.readiness import GATE
from etcd_registrar.term import Term
from tests.listeners import Posted, Reachable
from tests.unit.builders import opt_in, pod_body, registration_body
from tests.unit.memory_pipeline import memory_controller


@pytest.fixture
async def controller() -> AsyncIterator[Controller]:
    controller = memory_controller(MemoryEtcd(), Term.alone())
    await controller.registry.start()
    yield controller
    await controller.registry.close()


def gated(gate: tuple[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """A pod declaring the gate, Ready False (Ready waits for the gate); `gate`: its
    condition as the pod has it."""
    kwargs.setdefault("annotations", opt_in("goods"))
    body = pod_body(**kwargs)
    body["spec"]["readinessGates"] = [{"conditionType": GATE}]
    conditions = body["status"]["conditions"]
    for c in conditions:
        if c["type"] == "Ready":
            c["status"] = "False"
    if gate is not None:
        conditions.append({"type": GATE, "status": gate[0], "reason": gate[1]})
    return body


def said(controller: Controller, body: dict[str, Any], reachable: bool = True) -> Verdict | None:
    return verdict(controller, controller.state.pods[body["metadata"]["uid"]], reachable)


async def test_true_only_once_the_key_is_committed(controller: Controller) -> None:
    body = gated()
    outcome = controller.on_pod("ADDED", body)
    assert outcome.committed is not None
    assert controller.state.keys_by_pod  # registered on ContainersReady, not on Ready
    assert said(controller, body) is None  # being written: no patch yet
    bad = said(controller, body, reachable=False)
    assert bad is not None and bad.condition == ("False", "EtcdUnavailable")
    await outcome.committed
    registered = said(controller, body)
    assert registered is not None and registered.condition == ("True", "Registered")
    assert "/services/goods/goods-abc" in registered.message


async def test_an_outage_never_turns_a_registered_pod_false(controller: Controller) -> None:
    """Keys not (yet) in etcd while etcd is unreachable: a pod whose gate is True stays so;
    taking it out of its Services would cascade an etcd outage into every gated workload."""
    body = gated(gate=("True", "Registered"))
    controller.on_pod("ADDED", body)
    assert said(controller, body, reachable=False) is None


@pytest.mark.parametrize(
    ("pod", "reason", "words"),
    [
        pytest.param(gated(ready=False), "NotReady", "ContainersReady", id="containers"),
        pytest.param(gated(ip=None), "NotReady", "no IP", id="no-ip"),
        pytest.param(gated(deleting=True), "Terminating", "terminating", id="terminating"),
        pytest.param(
            gated(annotations=opt_in("goods", port="nope")), "InvalidSpec", "nope", id="port"
        ),
        pytest.param(gated(annotations={}), "InvalidSpec", "nothing registers", id="not-opted"),
    ],
)
async def test_false_with_the_reason(
    controller: Controller, pod: dict[str, Any], reason: str, words: str
) -> None:
    outcome = controller.on_pod("ADDED", pod)
    if outcome.committed is not None:
        await outcome.committed
    found = said(controller, pod)
    assert found is not None and found.condition == ("False", reason)
    assert words in found.message


async def test_an_invalid_registration_is_named(controller: Controller) -> None:
    controller.on_registration(
        "ADDED", registration_body({"service": "goods", "format": "go-zero", "prefix": "/x"})
    )
    body = gated()
    controller.on_pod("ADDED", body)
    found = said(controller, body)
    assert found is not None and found.condition == ("False", "InvalidSpec")
    assert found.message.startswith("ServiceRegistration goods: ")


async def test_the_younger_of_two_pods_with_one_key_is_in_conflict(
    controller: Controller,
) -> None:
    controller.on_registration("ADDED", registration_body({"key": "{prefix}/{service}/one"}))
    older = gated(name="goods-a", created="2024-01-01T00:00:00Z")
    younger = gated(name="goods-b", created="2024-01-01T00:01:00Z")
    committed = controller.on_pod("ADDED", older).committed
    controller.on_pod("ADDED", younger)
    assert committed is not None
    await committed
    winner, loser = said(controller, older), said(controller, younger)
    assert winner is not None and winner.condition == ("True", "Registered")
    assert loser is not None and loser.condition == ("False", "Conflict")
    assert "goods-a" in loser.message


async def test_a_namespace_flapping_many_gated_pods_delays_anothers_patch_by_a_turn(
    controller: Controller,
) -> None:
    """R2-7: 1,000 gated pods of one namespace queued for a patch, then one of another
    namespace: that one is patched second, not after the thousand."""
    gates = Gates(
        controller,
        controller.kube,
        controller.term,
        events=Posted(),
        etcd_check=Reachable(),
    )
    bad = opt_in("goods", port="nope")
    flood = [gated(name=f"bad-{i}", namespace="flood", annotations=bad) for i in range(1000)]
    mine = gated(name="mine", namespace="quiet", ready=False)
    for body in [*flood, mine]:
        controller.on_pod("ADDED", body)
        gates.examine(body["metadata"]["uid"])
    first_two = [await gates._next(), await gates._next()]
    assert mine["metadata"]["uid"] in first_two, first_two


@pytest.mark.parametrize(
    ("enabled", "leading", "told"),
    [(False, True, 1), (False, False, 0), (True, True, 0)],
    ids=["disabled-leader-tells-once", "disabled-standby-is-silent", "enabled"],
)
async def test_a_disabled_gate_is_told_once_by_the_leader(
    enabled: bool, leading: bool, told: int
) -> None:
    term = Term.alone() if leading else Term()
    controller = memory_controller(MemoryEtcd(), term, readiness_gate=enabled)
    events = Posted()
    gates = Gates(
        controller, controller.kube, term, events=events, etcd_check=Reachable(), enabled=enabled
    )
    body = gated()
    controller.on_pod("ADDED", body)
    for _ in range(2):
        gates.examine(body["metadata"]["uid"])
    assert [n.reason for n in events.notices] == ["ReadinessGateDisabled"] * told
    # the sweep's repost names it while its cause holds (the gate disabled, the pod gated)
    assert [n.reason for n in controller.warnings()] == ["ReadinessGateDisabled"] * (not enabled)
