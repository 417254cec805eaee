"""The readiness rule, copied from Kubernetes' EndpointSlice controller.

``ShouldPodBeInEndpoints`` drops pods that are finished or have no IP, and terminating pods
unless terminating endpoints are included; ``podToEndpoint`` then computes
``ready = publishNotReadyAddresses || (serving && !terminating)`` with ``serving`` = the
pod's Ready condition. A registry key exists exactly while ``ready`` would be true.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_FINISHED = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class PodState:
    """The few pod facts the rule reads."""

    ip: str | None
    phase: str | None
    ready: bool
    terminating: bool

    @classmethod
    def from_status(cls, status: Mapping[str, Any], terminating: bool) -> PodState:
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return cls(status.get("podIP") or None, status.get("phase"), ready, terminating)


def should_register(pod: PodState, *, publish_not_ready: bool = False) -> bool:
    """True iff the pod's endpoint would be `ready` in its EndpointSlice."""
    if pod.ip is None or pod.phase in _FINISHED:
        return False
    if publish_not_ready:
        return True  # Kubernetes also keeps terminating pods ready in this mode
    return pod.ready and not pod.terminating
