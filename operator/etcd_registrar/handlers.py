"""kopf glue: thin handlers that hand each event to the controller.

Pods are watched with `on.event` only: it persists nothing on the pod (no annotation, no
finalizer), and a pod handler returns None because kopf would patch a returned value into
the pod's status (DESIGN §4). Clients live in `memo`, opened on startup, closed on cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, cast

import kopf
import prometheus_client
from aiohttp import web

from etcd_registrar import GROUP, PLURAL, VERSION, health
from etcd_registrar.config import Settings
from etcd_registrar.controller import Controller, Notice, Outcome
from etcd_registrar.etcd import Etcd
from etcd_registrar.kube import Kube, load_config
from etcd_registrar.registry import Registry
from etcd_registrar.source import Defaults

logger = logging.getLogger(__name__)

EVENT_WAIT = 60.0  # how long a "Registered" Event waits for etcd before it is dropped


@dataclass
class App:
    """Everything the handlers share, created once per operator run."""

    config: Settings
    registry: Registry
    controller: Controller
    probes: web.AppRunner | None = None

    @classmethod
    async def start(cls, config: Settings) -> App:
        registry = Registry(Etcd(config.etcd()), owner=config.owner_id, dry_run=config.dry_run)
        kube = Kube(load_config(), config.namespace, config.pod_selector)
        defaults = Defaults(config.default_ttl, config.default_format, config.default_prefix)
        app = cls(config, registry, Controller(registry, kube, defaults, resync=config.resync))
        if config.metrics_port:
            prometheus_client.start_http_server(config.metrics_port)
        if config.health_port:
            app.probes = await health.serve(config.health_port, live=app.live, ready=app.ready)
        # Keepalives start before any pod handler runs: with many pods the first handler
        # may come later than a short lease lives (DESIGN §4).
        await registry.start()
        app.controller.start()
        return app

    async def stop(self) -> None:
        await self.controller.stop()
        await self.registry.close()
        if self.probes is not None:
            await self.probes.cleanup()

    def live(self) -> tuple[bool, str]:
        stale = time.monotonic() - self.controller.last_sweep
        limit = 3 * self.config.resync + 60
        if self.controller.view_complete.is_set() and stale > limit:
            return False, f"no sweep finished for {stale:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self.controller.view_complete.is_set():
            return False, "initial pod view incomplete"
        if not self.registry.healthy:
            return False, "etcd unreachable"
        return True, "ok"


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo.config
    settings.posting.enabled = True
    settings.watching.inactivity_timeout = 70  # reconnect silent watch streams
    if config.pod_selector:
        settings.watching.label_selectors["pods"] = config.pod_selector
    memo.app = await App.start(config)


@kopf.on.cleanup(errors=kopf.ErrorsMode.IGNORED)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "app" in memo:
        await memo.app.stop()


@kopf.on.event("pods")
async def pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Recompute this pod's keys. Must return None (see the module docstring)."""
    outcome = memo.app.controller.on_pod(type, body)
    _post(outcome.now)
    if outcome.after_commit and outcome.committed is not None:
        # A task started here inherits kopf's event context, so it may post Events.
        asyncio.create_task(_post_when_committed(outcome))  # noqa: RUF006


@kopf.on.event(GROUP, VERSION, PLURAL)
async def registration_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Re-render the keys of every pod this registration governs; status follows."""
    memo.app.controller.on_registration(type, body)


def _post(notices: list[Notice]) -> None:
    for notice in notices:
        pod = kopf.Body(cast(kopf.RawBody, dict(notice.pod)))
        kopf.event(pod, type=notice.type, reason=notice.reason, message=notice.message)


async def _post_when_committed(outcome: Outcome) -> None:
    assert outcome.committed is not None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(outcome.committed), EVENT_WAIT)
        _post(outcome.after_commit)
