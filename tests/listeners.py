"""What the pipeline's components tell their collaborators, recorded for tests (each a real
implementation of the Protocol it stands for: nothing is mocked, nothing answered)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from etcd_registrar.controller import ClaimRecorder, Controller, Notice
from etcd_registrar.etcd import Fence
from etcd_registrar.kube import Kube
from etcd_registrar.port import EtcdPort
from etcd_registrar.registry import Registry
from etcd_registrar.source import Defaults
from etcd_registrar.term import Term
from etcd_registrar.writer import Write
from tests.harness import no_api


@dataclass
class Setbacks:
    """registry.Setbacks: the keys a registry could not keep or write."""

    lost: list[set[str]] = field(default_factory=list)
    taken: list[set[str]] = field(default_factory=list)
    refused: list[tuple[Write, str]] = field(default_factory=list)

    def lease_lost(self, keys: set[str]) -> None:
        self.lost.append(keys)

    def found_taken(self, keys: set[str]) -> None:
        self.taken.append(keys)

    def write_refused(self, write: Write, reason: str) -> None:
        self.refused.append((write, reason))


@dataclass
class Posted:
    """controller.Poster: the Events a controller or the gates post."""

    notices: list[Notice] = field(default_factory=list)
    reposted: list[list[Notice]] = field(default_factory=list)

    def post(self, notices: list[Notice]) -> None:
        self.notices.extend(notices)

    def repost(self, current: Iterable[Notice]) -> None:
        self.reposted.append(list(current))


@dataclass
class Claims:
    """controller.ClaimRecorder: the owners recorded per service identity."""

    recorded: dict[str, str | None] = field(default_factory=dict)

    def record(
        self, identity: str, owner: str | None, shared: frozenset[str] = frozenset()
    ) -> None:
        self.recorded[identity] = owner


@dataclass
class Reachable:
    """controller.Reachability: etcd as the last check saw it."""

    reachable: bool = True


@dataclass
class Outcomes:
    """election.Leader: the terms an election won and lost."""

    elected_by: list[Fence | None] = field(default_factory=list)
    deposed_times: int = 0

    def elected(self, fence: Fence | None) -> None:
        self.elected_by.append(fence)

    def deposed(self) -> None:
        self.deposed_times += 1


def posted(controller: Controller) -> Posted:
    """What `controller` (built with a `Posted`) posted and reposted."""
    assert isinstance(controller.events, Posted)
    return controller.events


def setbacks(registry: Registry) -> Setbacks:
    """What `registry` (built with a `Setbacks`) could not keep or write."""
    assert isinstance(registry.setbacks, Setbacks)
    return registry.setbacks


def offline_controller(
    etcd: EtcdPort, term: Term, claims: ClaimRecorder, owner: str, *, readiness_gate: bool = True
) -> Controller:
    """A controller that makes no Kubernetes API call: the test hands it the pod events."""
    return Controller(
        etcd,
        Kube(no_api),
        Defaults(),
        term,
        events=Posted(),
        claims=claims,
        etcd_check=Reachable(),
        owner=owner,
        readiness_gate=readiness_gate,
    )
