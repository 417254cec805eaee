"""The readiness rule (DESIGN 2.4): Kubernetes' EndpointSlice `ready` computation."""

from __future__ import annotations

from typing import Any

import pytest

from etcd_registrar.readiness import PodState, should_register

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
