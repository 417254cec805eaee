"""Status writer: the status of every ServiceRegistration (Ready, InvalidSpec, Conflict).

The conditions are a pure function of the desired state and of what planning and etcd
found (`registration_status`); `StatusWriter` patches the registrations marked dirty, from
the leader, at most once a second, and only when something but the timestamps changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from etcd_registrar import kube
from etcd_registrar.desired import DesiredState
from etcd_registrar.kube import Kube
from etcd_registrar.plan import Conflict
from etcd_registrar.source import Registration, RegistrationId, ServiceId
from etcd_registrar.term import Term

logger = logging.getLogger(__name__)

Condition = tuple[str, bool, str, str]  # (type, status, reason, message)


@dataclass(frozen=True, slots=True)
class Findings:
    """What planning and etcd found about the desired keys."""

    held: Container[str]  # keys etcd holds on our leases
    conflicts: Mapping[str, Conflict]  # keys several pods claim
    taken: Container[str]  # wanted keys another writer holds
    refused: Mapping[str, str]  # key -> why etcd refused its write
    etcd_reachable: bool = True  # the latest reachability check's answer


def conditions(reg: Registration, state: DesiredState, found: Findings) -> list[Condition]:
    """Ready first, then InvalidSpec and Conflict when they hold."""
    keys = state.keys_by_service.get(reg.service_id, set())
    held = _held(reg, state, found)
    governing = state.governing.get(reg.service_id)
    out: list[Condition] = []
    if reg.error:
        out.append(("InvalidSpec", True, "InvalidSpec", reg.error))
    elif governing is not None and governing.name != reg.name:
        duplicate = f"service {reg.service} is already governed by {governing.name}"
        out.append(("InvalidSpec", True, "Duplicate", duplicate))
    clashes: list[tuple[str, str]] = []  # one Conflict condition: (reason, message)
    conflicts = [found.conflicts[k] for k in keys if k in found.conflicts]
    if conflicts:
        c = conflicts[0]
        losers = ", ".join(e.pod_name for e in c.losers)
        clashes.append(
            (
                "KeyConflict",
                f"{len(conflicts)} keys claimed by several pods, e.g. {c.key}: "
                f"{c.winner.pod_name} kept, {losers} refused",
            )
        )
    taken = sorted(k for k in keys if k in found.taken)
    if taken:
        clashes.append(
            (
                "KeyTaken",
                f"{len(taken)} keys already exist in etcd, written by another client, and "
                f"are not overwritten, e.g. {taken[0]}: delete them or use another prefix",
            )
        )
    refusal = reg.identity and state.intrusion(reg.service, reg.identity, reg.namespace)
    admitted = not refusal
    if refusal:
        clashes.insert(0, ("NotOwner", refusal))
    if clashes:
        out.append(("Conflict", True, clashes[0][0], "; ".join(m for _, m in clashes)))
    refused = sorted(k for k in keys if k in found.refused)
    ready = not reg.error and governing is reg and admitted and held == len(keys)
    # Ready=False names its cause, so that `kubectl wait` and alerts can tell them apart.
    pending = f"{len(keys) - held} of {len(keys)} keys not yet written to etcd"
    if ready:
        reason, message = "Synced", f"{held} keys held in etcd"
    elif refused:
        why = found.refused[refused[0]]
        reason, message = (
            "EtcdRefused",
            f"etcd refused {len(refused)} keys, e.g. {refused[0]}: {why}",
        )
    elif reg.error:
        reason, message = "InvalidSpec", reg.error
    elif governing is not None and governing is not reg:
        reason = "Duplicate"
        message = f"service {reg.service} is governed by {governing.name}; this one is unused"
    elif clashes and clashes[0][0] in ("NotOwner", "KeyTaken"):
        reason, message = clashes[0]
    elif not found.etcd_reachable:
        reason, message = "EtcdUnavailable", f"{pending}: etcd is not reachable"
    else:
        reason, message = "Pending", pending
    out.insert(0, ("Ready", ready, reason, message))
    return out


def _held(reg: Registration, state: DesiredState, found: Findings) -> int:
    return sum(1 for k in state.keys_by_service.get(reg.service_id, ()) if k in found.held)


def registration_status(
    reg: Registration,
    state: DesiredState,
    found: Findings,
    sent: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """The status of `reg`; a condition keeps its lastTransitionTime from the status `sent`
    last while its status stays the same."""
    previous = {c["type"]: c for c in (sent or {}).get("conditions") or []}
    stamped = []
    for ctype, value, reason, message in conditions(reg, state, found):
        status = "True" if value else "False"
        old = previous.get(ctype)
        since = old["lastTransitionTime"] if old and old.get("status") == status else now
        stamped.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since,
                "observedGeneration": reg.generation,
            }
        )
    return {
        "observedGeneration": reg.generation,
        "service": reg.service,
        "format": reg.format,
        "endpoints": _held(reg, state, found),
        "conditions": stamped,
    }


class StatusWriter:
    """Patches the status of the registrations marked dirty, while this replica leads."""

    def __init__(
        self,
        state: DesiredState,
        kube: Kube,
        findings: Callable[[], Findings],
        term: Term,
    ) -> None:
        self.state, self.kube, self.findings, self.term = state, kube, findings, term
        self.dirty: set[RegistrationId] = set()
        self._reachable: bool | None = None  # etcd, as the last round saw it
        self.sent: dict[RegistrationId, dict[str, Any]] = {}  # the status each one has

    def mark(self, idents: Iterable[RegistrationId]) -> None:
        self.dirty.update(idents)

    def mark_services(self, services: Iterable[ServiceId]) -> None:
        self.dirty |= self.state.governing_ids(services)

    def seen(self, ident: RegistrationId, status: Mapping[str, Any] | None) -> None:
        """The API server's copy of `ident` has `status` (the one sent before a restart)."""
        self.sent.setdefault(ident, dict(status or {}))

    def forget(self, ident: RegistrationId) -> None:
        self.sent.pop(ident, None)

    def status_of(self, ident: RegistrationId) -> dict[str, Any]:
        reg = self.state.registrations[ident]
        return registration_status(
            reg, self.state, self.findings(), self.sent.get(ident), kube.now()
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            reachable = self.findings().etcd_reachable
            if reachable != self._reachable:  # Ready's reason follows etcd
                self._reachable = reachable
                self.mark(self.state.registrations)
            if not self.term.leading:
                continue  # the leader writes statuses; ours stay dirty for when we lead
            dirty, self.dirty = self.dirty, set()
            for ident in dirty:
                if ident not in self.state.registrations:
                    continue
                status = self.status_of(ident)
                if _same_status(status, self.sent.get(ident)):
                    continue
                try:
                    await self.kube.patch_registration_status(*ident, status)
                    self.sent[ident] = status
                except Exception as exc:
                    if getattr(exc, "status", None) == 404:  # deleted: its event follows
                        continue
                    logger.warning("status update of %s/%s failed: %s", *ident, exc)
                    self.dirty.add(ident)


def _same_status(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    if not old:
        return False
    return _without_times(new) == _without_times(old)


def _without_times(status: Mapping[str, Any]) -> dict[str, Any]:
    conditions = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions") or []
    ]
    return {**status, "conditions": conditions}
