"""`etcd-registrar plan`: what `run` would write to etcd now, diffed against what etcd holds.

One pass of the real pipeline on a dry-run etcd adapter: the claims, registrations and pods
are read once, planned as the leader would plan them, and the writes the writer would make
are recorded instead of made (dryrun.py). Nothing is written to etcd or to the API server
(no Events, statuses or pod conditions): for migrating from self-registration, or checking a
configuration against a shared etcd before the operator runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from etcd_registrar.claimstore import ClaimStore
from etcd_registrar.config import Settings
from etcd_registrar.controller import Controller, Notice
from etcd_registrar.dryrun import DryRunEtcd
from etcd_registrar.etcd import Etcd
from etcd_registrar.formats import RESERVED_PREFIX
from etcd_registrar.kube import Kube
from etcd_registrar.podwatch import PodWatcher
from etcd_registrar.term import Term

if TYPE_CHECKING:
    from kopf import ConnectionInfo

logger = logging.getLogger(__name__)


@dataclass
class Plan:
    """The difference between etcd and what the operator would make of it (keys under the
    operator's own /etcd-registrar/ bookkeeping left out)."""

    put: dict[str, str] = field(default_factory=dict)  # absent now
    change: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (now, then)
    delete: dict[str, str] = field(default_factory=dict)  # key -> value now
    taken: list[str] = field(default_factory=list)  # wanted, but another writer holds them
    conflicts: list[str] = field(default_factory=list)  # claimed by several pods
    refused: dict[str, str] = field(default_factory=dict)  # key -> why etcd would refuse it

    def lines(self) -> list[str]:
        out = [f"+ {k} {v}" for k, v in sorted(self.put.items())]
        out += [f"~ {k} {new} (now {old})" for k, (old, new) in sorted(self.change.items())]
        out += [f"- {k} (now {v})" for k, v in sorted(self.delete.items())]
        out += [f"! {k}: held by another writer, not overwritten" for k in sorted(self.taken)]
        out += [f"! {k}: claimed by several pods, the oldest keeps it" for k in self.conflicts]
        out += [f"! {k}: etcd would refuse it: {why}" for k, why in sorted(self.refused.items())]
        counts = (
            f"{len(self.put)} to put, {len(self.change)} to change, {len(self.delete)} to "
            f"delete, {len(self.taken) + len(self.conflicts) + len(self.refused)} not written"
        )
        return [*out, counts]


async def plan(settings: Settings, credentials: Callable[[], ConnectionInfo]) -> Plan:
    """Read, plan and record one leader's pass; raises EtcdError if etcd cannot be read."""
    etcd = DryRunEtcd(settings.etcd())
    term = Term.alone()
    kube = Kube(credentials, settings.namespace, settings.pod_selector)
    store = ClaimStore(etcd, term, settings.owner_id)  # never run: records nothing
    controller = Controller(
        etcd,
        kube,
        settings.defaults(),
        term,
        events=_Unposted(),
        claims=store,
        etcd_check=_Reachable(),
        owner=settings.owner_id,
        max_keys_per_namespace=settings.max_keys_per_namespace,
    )
    registry = controller.registry
    try:
        await etcd.ping(registry.owner_prefix)  # fail now, not in the start-up's retry loop
        await registry.start()
        # Leads alone, as a dry run does, from before the first pod: a take-over re-reads
        # the leases, and the overlay's own (negative ids) are not records etcd would hold.
        await registry.take_over()
        claims = await store.load()
        controller.resume(claims, await kube.list_registrations())

        def render(kind: str | None, body: Mapping[str, Any]) -> None:
            try:
                controller.on_pod(kind, body)
            except Exception:  # as `run` does: one odd pod must not stop the others
                meta = body.get("metadata") or {}
                logger.exception("pod %s/%s skipped", meta.get("namespace"), meta.get("name"))

        pods = PodWatcher(kube)
        for scope in kube.scopes:
            await pods.list(scope, render)
        await controller.sweep()
        while not registry.idle:  # the writer records into the overlay; a refusal re-plans
            await registry.writes.drained.wait()
            await asyncio.sleep(0)
        recorded = dict(etcd.overlay.keys)
        # Etcd's own read, under the overlay: what etcd holds now.
        now = await Etcd.get_many(etcd, recorded)
    finally:
        await registry.close()
        await kube.close()
    result = Plan(
        taken=sorted(controller.taken),
        conflicts=sorted(controller.conflicts),
        refused=dict(controller.refused),
    )
    for key, after in recorded.items():
        if key.startswith(RESERVED_PREFIX + "/"):
            continue
        before = now.get(key)
        if after is None:
            if before is not None:
                result.delete[key] = before.value
        elif before is None:
            result.put[key] = after.value
        elif before.value != after.value:
            result.change[key] = (before.value, after.value)
    return result


class _Unposted:
    """A plan posts no Events: it lists what it found."""

    def post(self, notices: list[Notice]) -> None:
        pass

    def repost(self, current: Iterable[Notice]) -> None:
        pass


@dataclass(frozen=True)
class _Reachable:
    reachable: bool = True  # etcd answered the plan's first read
