"""The readiness rule, copied from Kubernetes' EndpointSlice controller.

``ShouldPodBeInEndpoints`` drops pods that are finished or have no IP, and terminating pods
unless terminating endpoints are included; ``podToEndpoint`` then computes
``ready = publishNotReadyAddresses || (serving && !terminating)`` with ``serving`` = the
pod's Ready condition. A registry key exists exactly while ``ready`` would be true.

A pod that declares the readiness gate ``GATE`` cannot wait for Ready, since Ready waits for
the gate: it is serving once the kubelet's Ready rule holds with the gate taken as True
(``ContainersReady`` and every other gate True), as the AWS Load Balancer Controller does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GATE = "etcd-registrar.io/registered"  # the pod condition type a gated pod declares
GATE_DISABLED = (
    f"the pod declares the readiness gate {GATE}, but the gate is disabled in this "
    "installation (--no-readiness-gate, Helm readinessGate.enabled=false): the pod never "
    "turns Ready. Remove the gate from the pod template, or enable it"
)
FINISHED = frozenset({"Succeeded", "Failed"})  # pod phases that never run again


@dataclass(frozen=True, slots=True)
class PodState:
    """The few pod facts the rule reads."""

    ip: str | None
    phase: str | None
    ready: bool
    terminating: bool
    containers_ready: bool = False
    gated: bool = False  # declares GATE in spec.readinessGates
    other_gates: bool = True  # every other declared gate's condition is True
    gate: tuple[str, str] | None = None  # GATE's condition as the pod has it: (status, reason)

    @classmethod
    def from_status(
        cls, status: Mapping[str, Any], terminating: bool, gates: Iterable[str] = ()
    ) -> PodState:
        conditions = {
            c.get("type"): (c.get("status"), c.get("reason") or "")
            for c in status.get("conditions") or []
        }
        gates = set(gates)
        gate = conditions.get(GATE)
        return cls(
            status.get("podIP") or None,
            status.get("phase"),
            conditions.get("Ready", ("",))[0] == "True",
            terminating,
            containers_ready=conditions.get("ContainersReady", ("",))[0] == "True",
            gated=GATE in gates,
            other_gates=all(conditions.get(g, ("",))[0] == "True" for g in gates - {GATE}),
            gate=(str(gate[0]), str(gate[1])) if gate else None,
        )


def should_register(pod: PodState, *, publish_not_ready: bool = False) -> bool:
    """True iff the pod's endpoint would be `ready` in its EndpointSlice (for a gated pod:
    would be, once the gate is True)."""
    if pod.ip is None or pod.phase in FINISHED:
        return False
    if publish_not_ready:
        return True  # Kubernetes also keeps terminating pods ready in this mode
    if pod.terminating:
        return False
    if pod.gated:
        return pod.containers_ready and pod.other_gates
    return pod.ready
