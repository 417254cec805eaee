"""The readiness rule (docs/annotations.md): Kubernetes' EndpointSlice `ready` computation."""

from __future__ import annotations

from typing import Any

import pytest

from etcd_registrar.readiness import GATE, PodState, should_register

IP = "10.0.0.5"


@pytest.mark.parametrize(
    ("state", "default", "publish_not_ready"),
    [
        pytest.param(PodState(IP, "Running", True, False), True, True, id="ready"),
        pytest.param(PodState(None, "Running", True, False), False, False, id="no-ip"),
        pytest.param(PodState(None, "Pending", False, False), False, False, id="no-ip-pending"),
        pytest.param(PodState(IP, "Succeeded", True, False), False, False, id="succeeded"),
        pytest.param(PodState(IP, "Failed", True, False), False, False, id="failed"),
        pytest.param(PodState(IP, "Failed", False, True), False, False, id="failed-terminating"),
        pytest.param(PodState(IP, "Running", False, False), False, True, id="not-ready"),
        pytest.param(PodState(IP, "Pending", False, False), False, True, id="pending-with-ip"),
        pytest.param(PodState(IP, "Running", True, True), False, True, id="terminating-ready"),
        pytest.param(PodState(IP, "Running", False, True), False, True, id="terminating-unready"),
        pytest.param(PodState(IP, None, True, False), True, True, id="no-phase-yet"),
    ],
)
def test_should_register(state: PodState, default: bool, publish_not_ready: bool) -> None:
    assert should_register(state) is default
    assert should_register(state, publish_not_ready=True) is publish_not_ready


@pytest.mark.parametrize(
    ("status", "ip", "ready"),
    [
        pytest.param(
            {"podIP": IP, "conditions": [{"type": "Ready", "status": "True"}]},
            IP,
            True,
            id="ready-true",
        ),
        pytest.param(
            {"podIP": IP, "conditions": [{"type": "Ready", "status": "False"}]},
            IP,
            False,
            id="ready-false",
        ),
        pytest.param(
            {"podIP": IP, "conditions": [{"type": "Ready", "status": "Unknown"}]},
            IP,
            False,
            id="ready-unknown",
        ),
        pytest.param(
            {"podIP": IP, "conditions": [{"type": "ContainersReady", "status": "True"}]},
            IP,
            False,
            id="ready-missing",
        ),
        pytest.param({"podIP": IP, "conditions": None}, IP, False, id="conditions-null"),
        pytest.param({"podIP": ""}, None, False, id="empty-ip"),
        pytest.param({}, None, False, id="empty-status"),
    ],
)
def test_pod_state_from_status(status: dict[str, Any], ip: str | None, ready: bool) -> None:
    state = PodState.from_status(status, terminating=False)
    assert (state.ip, state.ready, state.terminating) == (ip, ready, False)


def test_pod_state_keeps_phase_and_terminating() -> None:
    state = PodState.from_status({"podIP": IP, "phase": "Succeeded"}, terminating=True)
    assert (state.phase, state.terminating) == ("Succeeded", True)


# The readiness gate (docs/annotations.md#readiness-gate): a gated pod is registered on the
# kubelet's Ready rule with our own gate taken as True, i.e. ContainersReady and every other
# gate; publishNotReady wins.
@pytest.mark.parametrize(
    ("ip", "phase", "terminating", "containers", "others", "ready", "default", "pnr"),
    [
        (IP, "Running", False, True, True, False, True, True),  # waits for us, not for Ready
        (IP, "Running", False, True, True, True, True, True),
        (IP, "Running", False, False, True, False, False, True),  # containers not ready
        (IP, "Running", False, False, True, True, False, True),  # a stale Ready does not count
        (IP, "Running", False, True, False, False, False, True),  # another gate is False
        (IP, "Running", True, True, True, True, False, True),  # terminating
        (IP, "Succeeded", False, True, True, False, False, False),  # finished
        (None, "Pending", False, True, True, False, False, False),  # no IP
    ],
)
def test_should_register_gated(
    ip: str | None,
    phase: str,
    terminating: bool,
    containers: bool,
    others: bool,
    ready: bool,
    default: bool,
    pnr: bool,
) -> None:
    state = PodState(ip, phase, ready, terminating, containers, gated=True, other_gates=others)
    assert should_register(state) is default
    assert should_register(state, publish_not_ready=True) is pnr


def test_gate_facts_from_status() -> None:
    status = {
        "podIP": IP,
        "conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "example.com/lb", "status": "True"},
            {"type": GATE, "status": "False", "reason": "NotReady"},
        ],
    }
    state = PodState.from_status(status, False, [GATE, "example.com/lb"])
    assert (state.gated, state.containers_ready, state.other_gates) == (True, True, True)
    assert state.gate == ("False", "NotReady")
    assert should_register(state)
    missing = PodState.from_status(status, False, [GATE, "example.com/missing"])
    assert not missing.other_gates  # a gate without its condition counts as False
    ungated = PodState.from_status(status, False)
    assert not ungated.gated and not should_register(ungated)
