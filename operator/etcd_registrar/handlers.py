"""kopf glue: thin handlers that hand each event to the controller.

ServiceRegistrations are watched by kopf with `on.event`. Pods are watched by podwatch
(a paginated list and watch that keeps no pod bodies: kopf kept ~300 MiB of them at
10,000 pods), started with the rest of the pipeline; it persists nothing on the pods
either. Clients live in `memo`, opened on startup, closed on cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import kubernetes
from aiohttp import web

from etcd_registrar import GROUP, PLURAL, VERSION, metrics
from etcd_registrar.config import Settings
from etcd_registrar.controller import Controller, Notice, Outcome
from etcd_registrar.etcd import Etcd
from etcd_registrar.health import (
    ETCD_CHECK_TASK,
    POD_WATCH_TASK,
    EtcdCheck,
    Handler,
    Health,
    metrics_routes,
    probe_routes,
    serve,
)
from etcd_registrar.kube import Kube, load_config
from etcd_registrar.podwatch import PodWatcher
from etcd_registrar.registry import Registry
from etcd_registrar.source import Defaults

logger = logging.getLogger(__name__)

EVENT_WAIT = 60.0  # how long a "Registered" Event waits for etcd before it is dropped
# Normal Events are one API request each: a rollout of 3 pods gets all of theirs, a burst of
# thousands gets the first NORMAL_EVENT_BURST and then NORMAL_EVENT_RATE per second (the API
# server would otherwise take one request per transition).
NORMAL_EVENT_RATE, NORMAL_EVENT_BURST = 10.0, 100
GC_PAUSE_LIMIT = 60.0  # at most this long without cyclic garbage collection at startup
DRAIN_TIMEOUT = 5.0  # on SIGTERM, how long queued etcd writes may take to commit
# Liveness: the sweep loop must come round within 3 resync intervals plus a minute.
SWEEP_DEADLINE_RESYNCS, SWEEP_DEADLINE_SLACK = 3, 60.0


@dataclass
class App:
    """Everything the handlers share, created once per operator run."""

    config: Settings
    registry: Registry
    controller: Controller
    health: Health
    pods: PodWatcher
    servers: list[web.AppRunner] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    posts: set[asyncio.Task[None]] = field(default_factory=set)  # Events being posted
    normal_events: TokenBucket = field(
        default_factory=lambda: TokenBucket(NORMAL_EVENT_RATE, NORMAL_EVENT_BURST)
    )

    @classmethod
    def create(cls, config: Settings, api: kubernetes.client.ApiClient | None = None) -> App:
        """Build the pipeline (Kubernetes client: `api`, else from the environment); nothing
        is connected or started yet."""
        registry = Registry(Etcd(config.etcd()), owner=config.owner_id, dry_run=config.dry_run)
        kube = Kube(api or load_config(), config.namespace, config.pod_selector)
        defaults = Defaults(config.default_ttl, config.default_format, config.default_prefix)
        controller = Controller(registry, kube, defaults, resync=config.resync)
        etcd_check = EtcdCheck(
            lambda: registry.etcd.ping(registry.owner_prefix), timeout=config.etcd_timeout
        )
        health = Health(
            etcd_check,
            view_complete=controller.view_complete.is_set,
            last_sweep=lambda: controller.last_sweep,
            sweep_deadline=SWEEP_DEADLINE_RESYNCS * config.resync + SWEEP_DEADLINE_SLACK,
        )
        pods = PodWatcher(kube)
        return cls(config, registry, controller, health, pods)

    async def start(self) -> None:
        routes: dict[int, dict[str, Handler]] = {}
        if self.config.health_port:
            routes.setdefault(self.config.health_port, {}).update(probe_routes(self.health))
        if self.config.metrics_port:
            routes.setdefault(self.config.metrics_port, {}).update(metrics_routes())
        metrics.watch_state(self.endpoint_counts, lambda: self.health.etcd.reachable)
        for port, handlers in routes.items():
            self.servers.append(await serve(port, handlers))
        self.tasks.append(asyncio.create_task(self.health.etcd.run(), name=ETCD_CHECK_TASK))
        # Keepalives start before any pod handler runs: with many pods the first handler
        # may come later than a short lease lives (DESIGN §4).
        await self.registry.start()
        self.controller.start()
        self.tasks.append(asyncio.create_task(self.pods.run(self.on_pod), name=POD_WATCH_TASK))
        self.tasks.append(asyncio.create_task(self._freeze_initial_view(), name="gc-freeze"))
        self.health.started = True
        if self.config.dry_run:
            logger.warning("dry run: etcd writes are logged, not made")

    async def stop(self) -> None:
        """Stop on SIGTERM: commit what is queued (briefly), then leave the leases alone.

        Keys stay in etcd on their leases: a successor (the next pod of a Recreate rollout)
        adopts the leases and keeps every key without a gap; without one they expire after
        their TTL. Revoking here would empty the registry on every upgrade.
        """
        await self.controller.stop()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while not self.registry.idle and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the registry has no idle event; once, at shutdown
        if not self.registry.idle:
            logger.warning("shutting down with etcd writes still queued (etcd unreachable?)")
        await self.registry.close()
        for task in [*self.tasks, *self.posts]:  # kopf would wait 5 s for stray tasks
            task.cancel()
        for runner in self.servers:
            await runner.cleanup()
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
        self._post(outcome.now)
        if outcome.after_commit and outcome.committed is not None:
            if not self.normal_events.take():
                metrics.events_dropped.inc(len(outcome.after_commit))
                return
            self._track(self._post_when_committed(outcome))

    def _post(self, notices: list[Notice]) -> None:
        for notice in notices:
            self._track(self._post_one(notice))

    async def _post_one(self, notice: Notice) -> None:
        try:
            await self.controller.kube.post_event(
                notice.pod, notice.type, notice.reason, notice.message
            )
        except Exception as exc:  # an Event is informative; the registry is what matters
            logger.warning("could not post the %s Event: %s", notice.reason, exc)

    async def _post_when_committed(self, outcome: Outcome) -> None:
        assert outcome.committed is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(outcome.committed), EVENT_WAIT)
            self._post(outcome.after_commit)

    def _track(self, post: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(post)
        self.posts.add(task)
        task.add_done_callback(self.posts.discard)

    def endpoint_counts(self) -> dict[tuple[str, str], int]:
        """Keys held per (namespace, service); 0 for a registration that holds none."""
        counts = Counter(held.pool[:2] for held in self.registry.held.values())
        for reg in self.controller.registrations.values():
            counts.setdefault((reg.namespace, reg.service), 0)
        return counts


class TokenBucket:
    """At most `rate` takes per second on average, `burst` at once."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.stamp = float(burst), clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo.config
    settings.watching.inactivity_timeout = 70  # reconnect silent watch streams
    memo.app = App.create(config)  # in memo before starting: cleanup stops what started
    await memo.app.start()


@kopf.on.cleanup(errors=kopf.ErrorsMode.IGNORED)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "app" in memo:
        await memo.app.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def registration_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Re-render the keys of every pod this registration governs; status follows."""
    memo.app.controller.on_registration(type, body)
