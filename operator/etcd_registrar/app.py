"""The composition root: builds the pipeline once per operator run, starts and stops it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from etcd_registrar import metrics
from etcd_registrar.claimstore import ClaimStore
from etcd_registrar.config import Settings
from etcd_registrar.controller import Controller
from etcd_registrar.dryrun import DryRunEtcd
from etcd_registrar.election import Election
from etcd_registrar.etcd import Etcd, EtcdError, Fence
from etcd_registrar.events import EventPoster
from etcd_registrar.gates import Gates
from etcd_registrar.health import EtcdCheck, Handler, Health, metrics_routes, probe_routes, serve
from etcd_registrar.kube import Kube, login
from etcd_registrar.leases import lease_records
from etcd_registrar.podwatch import PodWatcher
from etcd_registrar.port import EtcdPort
from etcd_registrar.registry import Registry
from etcd_registrar.source import ServiceId
from etcd_registrar.supervisor import Backoff, Loop
from etcd_registrar.tenancy import ClaimPolicy
from etcd_registrar.term import Term

if TYPE_CHECKING:
    from kopf import ConnectionInfo

logger = logging.getLogger(__name__)

GC_PAUSE_LIMIT = 60.0  # at most this long without cyclic garbage collection at startup
DRAIN_TIMEOUT = 5.0  # on SIGTERM, how long queued etcd writes may take to commit
# Liveness: the sweep loop must come round within 3 resync intervals plus a minute.
SWEEP_DEADLINE_RESYNCS, SWEEP_DEADLINE_SLACK = 3, 60.0
FOLLOW_INTERVAL = 1.0  # a standby re-reads the leases the leader granted at most this often


@dataclass
class App:
    """Everything the handlers share, created once per operator run."""

    config: Settings
    registry: Registry
    controller: Controller
    health: Health
    pods: PodWatcher
    events: EventPoster
    claims: ClaimStore
    election: Election
    gates: Gates
    term: Term
    servers: list[web.AppRunner] = field(default_factory=list)
    loops: list[Loop] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _resumed: bool = False

    @classmethod
    def create(
        cls,
        config: Settings,
        credentials: Callable[[], ConnectionInfo] | None = None,
        cluster: str = "",
        etcd: EtcdPort | None = None,
    ) -> App:
        """Build the pipeline (the API server's `credentials`, else kube.login's; etcd:
        `etcd`, else the configured one) for the cluster `cluster` (its identity, "" if
        unknown); nothing is connected or started yet."""
        if etcd is None:
            etcd = DryRunEtcd(config.etcd()) if config.dry_run else Etcd(config.etcd())
        term = Term()  # a standby until elected
        credentials = credentials or (lambda: login(config.kubeconfig))
        kube = Kube(credentials, config.namespace, config.pod_selector)
        events = EventPoster(kube)
        etcd_check = EtcdCheck(
            lambda: etcd.ping(lease_records(config.owner_id)), timeout=config.etcd_timeout
        )
        claims = ClaimStore(etcd, term, config.owner_id, cluster)
        controller = Controller(
            etcd,
            kube,
            config.defaults(),
            term,
            events=events,
            claims=claims,
            etcd_check=etcd_check,
            owner=config.owner_id,
            cluster=cluster,
            resync=config.resync,
            max_keys_per_namespace=config.max_keys_per_namespace,
            policy=ClaimPolicy(
                max_per_namespace=config.max_claims_per_namespace,
                assigned_only=config.claims == "assigned",
            ),
            readiness_gate=config.readiness_gate,
        )
        gates = Gates(
            controller,
            kube,
            term,
            events=events,
            etcd_check=etcd_check,
            enabled=config.readiness_gate,
            dry_run=config.dry_run,
        )
        replica = f"{socket.gethostname()}/{os.getpid()}"  # a pod's host name is its name
        election = Election(
            etcd,
            config.owner_id,
            config.candidate(replica, cluster),
            Succession(controller.registry, term, controller),
        )
        health = Health(
            etcd_check,
            view_complete=controller.view_complete.is_set,
            last_sweep=lambda: controller.last_sweep,
            sweep_deadline=SWEEP_DEADLINE_RESYNCS * config.resync + SWEEP_DEADLINE_SLACK,
            misconfigured=lambda: election.misconfigured,
        )
        return cls(
            config,
            controller.registry,
            controller,
            health,
            PodWatcher(kube, controller.on_listed),
            events,
            claims,
            election,
            gates,
            term,
        )

    async def start(self) -> None:
        """Serve probes, adopt the leases, learn the registrations, then follow the pods.

        A failure stops whatever had started, so a retry starts clean (no port in use)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        routes: dict[int, dict[str, Handler]] = {}
        if self.config.health_port:
            routes.setdefault(self.config.health_port, {}).update(probe_routes(self.health))
        if self.config.metrics_port:
            routes.setdefault(self.config.metrics_port, {}).update(metrics_routes())
        metrics.watch_state(self.endpoint_counts, lambda: self.health.etcd.reachable)
        for port, handlers in routes.items():
            self.servers.append(await serve(port, handlers))
        self.loops.append(Loop("etcd-check", self.health.etcd.run).start())
        # Keepalives start before any pod handler runs: with many pods the first handler
        # may come later than a short lease lives.
        await self.registry.start()
        self.tasks.append(asyncio.create_task(self._watch_term(), name="term"))
        self.loops.append(Loop("claims", self.claims.run).start())
        self.loops.append(
            Loop("claims-elsewhere", lambda: self.claims.follow(self.controller)).start()
        )
        self.controller.start()
        self.loops.append(Loop("readiness-gate", self.gates.run).start())
        self.loops.append(Loop("warnings", self.events.run).start())
        self.loops.append(Loop("pod-watch", self._follow_pods).start())
        if self.config.dry_run:  # leads alone, writing nothing: it must not depose a leader
            self.election.outcome.elected(None)
        else:
            self.loops.append(Loop("election", self._campaign).start())
            self.loops.append(Loop("standby", self._stand_by).start())
        self.tasks.append(asyncio.create_task(self._freeze_initial_view(), name="gc-freeze"))
        self.health.loops = [*self.loops, *self.registry.loops, *self.controller.loops]
        self.health.started = True
        if self.config.dry_run:
            logger.warning("dry run: etcd writes are logged, not made")

    async def _watch_term(self) -> None:
        """A term that ends otherwise than by the election (a write etcd refused as fenced,
        a failed take-over) ends the election's too."""
        while True:
            await self.term.began()
            await self.term.ended()
            self.election.step_down(self.term.reason)

    async def _campaign(self) -> None:
        """Campaign only once the pod view is complete: a fresh replica leading with a
        partial view would delete the keys of the pods it has not listed yet."""
        await self.controller.view_complete.wait()
        await self.election.run()

    async def _stand_by(self) -> None:
        """Keep alive the leases the leader grants, so a failover never expires a key; read
        their records again when they change."""
        while True:
            if not self.election.leading:
                try:
                    await self.registry.follow()
                except EtcdError as exc:  # an outage: the leases wait, and so do we
                    logger.debug("following the leader's leases: %s", exc)
            await asyncio.sleep(FOLLOW_INTERVAL)

    async def _follow_pods(self) -> None:
        """Pods are rendered only once the claims and registrations are known: else a
        restart publishes default-layout keys for governed services (and the first sweep
        deletes theirs), or lets an intruder's pod claim a range first."""
        if not self._resumed:
            backoff = Backoff(cap=10.0)
            while True:
                try:
                    claims = await self.claims.load()
                    bodies = await self.controller.kube.list_registrations()
                    await self.claims.synced.wait()  # other clusters' claims, before any pod
                    break
                except Exception as exc:
                    logger.warning("reading claims and registrations failed (%s); retrying", exc)
                    await backoff.sleep()
            self.controller.resume(claims, bodies)
            self._resumed = True
        await self.pods.run(self.on_pod)

    async def stop(self) -> None:
        """Stop on SIGTERM: commit what is queued (briefly), then leave the leases alone.

        Keys stay in etcd on their leases: a successor (the next pod of a Recreate rollout)
        adopts the leases and keeps every key without a gap; without one they expire after
        their TTL. Revoking here would empty the registry on every upgrade.
        """
        await self.controller.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.registry.writes.drained.wait(), DRAIN_TIMEOUT)
        if not self.registry.idle:
            logger.warning("shutting down with etcd writes still queued (etcd unreachable?)")
        for loop in self.loops:  # no new campaign after resigning
            if loop.name == "election":
                await loop.stop()
        await self.election.resign()  # a standby takes over now, not after the lease
        await self.registry.close()
        for loop in self.loops:
            await loop.stop()
        for task in self.tasks:
            task.cancel()
        self.events.stop()
        await self.controller.kube.close()
        for runner in self.servers:
            await runner.cleanup()
        self.servers.clear()
        logger.info(
            "stopped; %d keys stay on their leases until a successor adopts them or the TTL ends",
            len(self.registry.held),
        )

    async def _freeze_initial_view(self) -> None:
        """Collect no cyclic garbage while the initial pod list floods in (every collection
        would walk all of it, pausing the event loop for up to a second at 10,000 pods), then
        move the state of the pods seen out of the collector's view for good. Reference
        counting frees objects as usual meanwhile; the wait is bounded in case the view never
        completes (API server unreachable)."""
        gc.disable()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.controller.view_complete.wait(), GC_PAUSE_LIMIT)
            gc.freeze()
        finally:
            gc.enable()

    def on_pod(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Recompute this pod's keys; post its Events (Normal ones once etcd has the keys)."""
        try:
            outcome = self.controller.on_pod(event_type, body)
        except Exception:  # one odd pod must not stop the watch of all the others
            meta = body.get("metadata") or {}
            logger.exception("pod %s/%s skipped", meta.get("namespace"), meta.get("name"))
            return
        if self.term.leading:  # one replica tells, not each
            self.events.outcome(outcome)
        self.gates.outcome(body["metadata"]["uid"], outcome.committed)

    def endpoint_counts(self) -> dict[ServiceId, int]:
        """Keys held per service; 0 for a registration that holds none."""
        counts = Counter(held.pool.service_id for held in self.registry.held.values())
        for reg in self.controller.state.registrations.values():
            counts.setdefault(reg.service_id, 0)
        return counts


class Succession:
    """Acts on the election's outcome: elected, re-read what etcd holds, then begin the term
    and let the controller take over (in this order: the term must not begin on a stale
    view); deposed, end the term."""

    def __init__(self, registry: Registry, term: Term, controller: Controller) -> None:
        self.registry, self.term, self.controller = registry, term, controller
        self.tasks: set[asyncio.Task[None]] = set()

    def elected(self, fence: Fence | None) -> None:
        task = asyncio.create_task(self._take_over(fence), name="promote")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _take_over(self, fence: Fence | None) -> None:
        try:
            await self.registry.take_over()
        except Exception as exc:  # e.g. etcd gone mid-way: lead another time
            self.term.forfeit(fence, f"taking over failed: {exc}")
            return
        self.term.begin(fence)
        self.controller.took_over()

    def deposed(self) -> None:
        self.term.end("another replica leads")
