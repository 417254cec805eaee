"""The readiness gate (docs/annotations.md#readiness-gate): the pod condition `GATE` a pod
waits on when it declares it in spec.readinessGates, so that Kubernetes makes it Ready only
once consumers can find it.

Level-triggered, like the controller: what the condition should say is computed from the
controller's state (the pod, its keys, what etcd holds), never remembered from an event. A
pod is examined on each of its events and once its writes commit; every gated pod whose
condition is not yet right is examined again every RECHECK seconds, so a lost event or a
failed patch never leaves a rollout waiting (AWS LBC #1205: a gate set only after a restart).

Patches go through pods/status, set only `GATE`, carry the pod's UID as a precondition, are
coalesced per pod (the newest verdict wins) and rate-limited; they run in their own loop, so
they never delay an etcd write. A failed patch is retried within seconds, not after a
backoff of minutes (AWS LBC #3622: a 16-minute wait that matched its retry backoff).

No fail-safe: GKE's NEG gate turns True 10 minutes after pod creation whatever happened;
here that would complete a rollout whose pods consumers cannot find, the failure the gate
exists to prevent. A stuck rollout is reported by the Deployment's progressDeadlineSeconds
and by the condition's reason; a workload that prefers availability omits the gate.

An etcd outage never turns a True condition False: that would take every gated pod out of
its Services at once. The condition goes False only for the pod's own reasons (not ready,
terminating, conflict, invalid input).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from etcd_registrar import metrics
from etcd_registrar.controller import Controller, Poster, Reachability, gate_disabled
from etcd_registrar.kube import Kube, now
from etcd_registrar.pacing import PacedQueue, TokenBucket
from etcd_registrar.readiness import FINISHED, GATE
from etcd_registrar.source import PodView
from etcd_registrar.supervisor import Backoff
from etcd_registrar.term import Term

logger = logging.getLogger(__name__)

RECHECK = 5.0  # seconds between examinations of every gated pod whose condition is not right
# Each patch follows a status write of the pod's kubelet, so the rate only bounds a storm: a
# rollout gets its patches at once, a churn of 100 pod transitions a second (the benchmark's)
# keeps up with room to spare, a mass change of thousands is spread out. PARALLEL requests in
# flight.
GATE_PATCH_RATE, GATE_PATCH_BURST, PARALLEL = 200.0, 1000, 8


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `GATE` should say about a pod."""

    status: bool
    reason: str
    message: str

    @property
    def condition(self) -> tuple[str, str]:
        return ("True" if self.status else "False", self.reason)

    @property
    def priority(self) -> int:
        """Which queue the patch waits in (0 first)."""
        return 0 if self.status else 2 if self.reason == "Terminating" else 1


def verdict(controller: Controller, pod: PodView, etcd_reachable: bool) -> Verdict | None:
    """What `GATE` should say about `pod` now; None while its keys are on their way to etcd."""
    state = pod.state
    if state.terminating:
        return Verdict(False, "Terminating", "the pod is terminating: its key is deleted")
    keys = controller.state.keys_by_pod.get(pod.uid, set())
    if keys and all(_committed(controller, pod.uid, key) for key in keys):
        return Verdict(True, "Registered", f"in etcd: {', '.join(sorted(keys))}")
    problems = "; ".join(controller.state.problems.get(pod.uid, ()))
    interest = controller.state.interest.get(pod.uid, {})
    if any(not controller.state.tenancy.admits(i, pod.namespace) for i in interest):
        return Verdict(False, "Conflict", problems)  # says which namespace owns the keys
    for key in sorted(keys):
        if message := controller.warned.get(key, {}).get(pod.uid):
            return Verdict(False, "Conflict", message)
    if problems:
        return Verdict(False, "InvalidSpec", problems)
    if state.ip is None or state.phase in FINISHED:
        return Verdict(False, "NotReady", f"the pod has no IP or has finished ({state.phase})")
    if not state.containers_ready:
        return Verdict(False, "NotReady", "ContainersReady is not True: no key is held")
    if not state.other_gates:
        return Verdict(False, "NotReady", "the pod's other readiness gates are not all True")
    if keys:
        if etcd_reachable or state.gate == ("True", "Registered"):
            return None  # being written; an outage never takes a registered pod out
        return Verdict(False, "EtcdUnavailable", "etcd is unreachable: the key is not written")
    invalid = [
        f"ServiceRegistration {r.name}: {r.error}"
        for r in controller.state.governing.values()
        if r.namespace == pod.namespace and r.error and (r.service == pod.service or r.selects(pod))
    ]
    if invalid:
        return Verdict(False, "InvalidSpec", "; ".join(invalid))
    return Verdict(
        False,
        "InvalidSpec",
        "nothing registers this pod: add the etcd-registrar.io/service annotation or a "
        "ServiceRegistration that selects it, or remove the readiness gate",
    )


def _committed(controller: Controller, uid: str, key: str) -> bool:
    """etcd holds `key` with the value pod `uid` wants there."""
    held = controller.registry.held.get(key)
    mine = controller.state.claims.get(key, {}).get(uid)
    conflict = controller.conflicts.get(key)
    lost = conflict is not None and conflict.winner.pod_uid != uid
    return held is not None and mine is not None and held.value == mine.value and not lost


class Gates:
    """Keeps `GATE` of every gated pod in step with its registration."""

    def __init__(
        self,
        controller: Controller,
        kube: Kube,
        term: Term,
        *,
        events: Poster,
        etcd_check: Reachability,
        enabled: bool = True,
        dry_run: bool = False,
    ) -> None:
        self.controller, self.kube, self.enabled = controller, kube, enabled
        self.dry_run = dry_run  # log the patches instead of making them
        self.events, self.etcd_check = events, etcd_check
        self.term = term  # only the leader patches, where there are several replicas
        # The patches to make, coalesced per pod uid, by priority: True ones hold up
        # rollouts; False ones must land before the pod's containers are ready again;
        # Terminating only informs (the pod is never Ready again). Within a priority the
        # namespaces take turns: one flapping many gated pods delays no other's rollout.
        self.queue: PacedQueue[str, Verdict] = PacedQueue(
            TokenBucket(GATE_PATCH_RATE, GATE_PATCH_BURST), priorities=3
        )
        self.sent: dict[str, tuple[str, str]] = {}  # pod uid -> patched, echo not seen yet
        self.warned: set[str] = set()  # pods told the gate is disabled

    def outcome(self, uid: str, committed: asyncio.Future[None] | None) -> None:
        """After a pod event: examine the pod now, and again once its writes commit."""
        try:
            self.examine(uid)
        except Exception:  # the pod watch goes on; the recheck examines the pod again
            logger.exception("readiness gate of pod %s not examined", uid)
        if committed is not None and not committed.done():
            committed.add_done_callback(lambda _: self.examine(uid))

    def examine(self, uid: str, *, trust_sent: bool = True) -> None:
        pod = self.controller.state.pods.get(uid)
        if pod is None or not pod.state.gated:
            self._forget(uid)
            return
        if not self.enabled:
            if uid not in self.warned and self.term.leading:  # one replica tells, not each
                self.warned.add(uid)
                self.events.post([gate_disabled(pod)])
            return
        if uid in self.sent and self.sent[uid] == pod.state.gate:
            del self.sent[uid]  # our patch has arrived: the pod's own condition is the truth
        wanted = verdict(self.controller, pod, self.etcd_check.reachable)
        have = self.sent.get(uid, pod.state.gate) if trust_sent else pod.state.gate
        if wanted is not None and wanted.condition != have:
            self.queue.put(pod.namespace, uid, wanted, wanted.priority)
        else:
            self.queue.discard(uid)

    def _forget(self, uid: str) -> None:
        self.queue.discard(uid)
        self.sent.pop(uid, None)
        self.warned.discard(uid)

    def recheck(self) -> None:
        """Examine every gated pod again, believing only the pods' own conditions; forget
        the pods the sweep found gone."""
        pods = self.controller.state.pods
        for uid in {*self.sent, *self.warned, *self.queue} - pods.keys():
            self._forget(uid)
        waiting = 0
        for uid, pod in list(pods.items()):
            if pod.state.gated:
                self.examine(uid, trust_sent=self.dry_run)  # a dry run's patches never echo
                waiting += pod.state.gate != ("True", "Registered")
        metrics.gates_waiting.set(waiting)

    async def run(self) -> None:
        """Examine every gated pod each RECHECK; PARALLEL workers patch what is queued."""
        async with asyncio.TaskGroup() as group:  # one crashes: all restart (supervisor)
            for _ in range(PARALLEL):
                group.create_task(self._work())
            while True:
                self.recheck()
                await asyncio.sleep(RECHECK)

    async def _work(self) -> None:
        backoff = Backoff(cap=5.0)
        while True:
            if await self._patch(await self._next()):
                backoff.reset()
            else:
                await backoff.sleep()

    async def _next(self) -> str:
        """The pod to patch next, once this replica may write and the rate allows it."""
        uid, _ = await self.queue.next(lambda: self.term.leading)
        return uid

    async def _patch(self, uid: str) -> bool:
        """Patch `GATE` of pod `uid` as it should be now (a standby queued from a view that
        may be stale by the time it leads); False if it should be retried."""
        pod = self.controller.state.pods.get(uid)
        if pod is None:
            return True
        wanted = verdict(self.controller, pod, self.etcd_check.reachable)
        if wanted is None or wanted.condition == pod.state.gate:
            return True
        status, reason = wanted.condition
        condition = {"type": GATE, "status": status, "reason": reason, "message": wanted.message}
        if pod.state.gate is None or pod.state.gate[0] != status:
            condition["lastTransitionTime"] = now()
        if self.dry_run:
            logger.info(
                "dry-run: would set %s of pod %s/%s: %s", GATE, pod.namespace, pod.name, condition
            )
            self.sent[uid] = wanted.condition
            return True
        try:
            await self.kube.patch_pod_condition(pod.namespace, pod.name, uid, condition)
        except Exception as exc:
            if getattr(exc, "status", None) in (404, 409):  # gone, or a new pod of that name
                metrics.gate_patches.labels("gone").inc()
                return True
            metrics.gate_patches.labels("error").inc()
            logger.warning("could not set %s of pod %s/%s: %s", GATE, pod.namespace, pod.name, exc)
            if uid not in self.queue:  # a newer one wins
                self.queue.put(pod.namespace, uid, wanted, wanted.priority)
            return False
        metrics.gate_patches.labels(status).inc()
        self.sent[uid] = wanted.condition
        return True
