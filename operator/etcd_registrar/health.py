"""Liveness (/healthz), readiness (/readyz) and metrics (/metrics) over HTTP.

The server runs on the operator's own event loop on purpose: when the loop is blocked
nothing answers, the kubelet's probe times out, and the pod is restarted (a server thread,
like prometheus_client's, would go on answering 200 for a frozen operator).

- Ready: startup finished (etcd answered and the predecessor's leases are adopted), the
  initial view of the pods is complete, and etcd answers a linearizable read (checked
  every `ETCD_CHECK_INTERVAL` seconds, so an outage, a hang or a lost quorum shows within
  interval + timeout).
- Live: startup finished within `startup_deadline`, the operator's loops are all running
  (each is restarted after a crash; one that keeps crashing fails this), and the sweep loop
  came round within `sweep_deadline` (a sweep blocked on a hung API call is a stuck loop; a
  sweep that fails because etcd is down is not: it is retried, and restarting would not help).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import prometheus_client
from aiohttp import web

from etcd_registrar.supervisor import Loop

logger = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ETCD_CHECK_INTERVAL = 2.0
# Adoption waits for etcd and the first lists wait for the API server; past this, a restart
# is the better bet (a fresh process, maybe on another node).
STARTUP_DEADLINE = 300.0


class EtcdCheck:
    """Pings etcd every `interval`; `reachable` is the latest answer."""

    def __init__(
        self,
        ping: Callable[[], Awaitable[object]],
        *,
        timeout: float,
        interval: float = ETCD_CHECK_INTERVAL,
    ) -> None:
        self.ping, self.timeout, self.interval = ping, timeout, interval
        self.reachable = False
        self.reason = "not checked yet"

    async def check(self) -> bool:
        try:
            await asyncio.wait_for(self.ping(), self.timeout)
        except Exception as exc:  # whatever the failure, etcd did not answer
            reason = str(exc) or type(exc).__name__
            if self.reachable:
                logger.warning("etcd unreachable: %s", reason)
            self.reachable, self.reason = False, reason
        else:
            if not self.reachable and self.reason != "not checked yet":
                logger.info("etcd reachable again")
            self.reachable, self.reason = True, "ok"
        return self.reachable

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval)


@dataclass
class Health:
    """The liveness and readiness rules, read from the running operator."""

    etcd: EtcdCheck
    view_complete: Callable[[], bool]
    last_sweep: Callable[[], float]  # time.monotonic() when the sweep loop last came round
    sweep_deadline: float
    misconfigured: Callable[[], str | None]  # why this replica must not run (the election)
    startup_deadline: float = STARTUP_DEADLINE
    loops: list[Loop] = field(default_factory=list)  # every long-running loop, once started
    started: bool = False  # set once startup finished and every loop was started
    created: float = field(default_factory=time.monotonic)

    def live(self) -> tuple[bool, str]:
        if not self.started:
            waited = time.monotonic() - self.created
            if waited > self.startup_deadline:
                return False, f"startup has not finished within {waited:.0f}s"
            return True, "starting"
        failing = [f"{loop.name} {why}" for loop in self.loops if (why := loop.failing)]
        if failing:
            return False, f"operator loop failing: {', '.join(failing)}"
        stale = time.monotonic() - self.last_sweep()
        if self.view_complete() and stale > self.sweep_deadline:
            return False, f"sweep loop stuck: no sweep came round for {stale:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if (problem := self.misconfigured()) is not None:
            return False, problem
        if not self.etcd.reachable:
            return False, f"etcd unreachable: {self.etcd.reason}"
        if not self.started:
            return False, "starting: adopting leases from etcd"
        if not self.view_complete():
            return False, "initial pod view incomplete"
        return True, "ok"


def probe_routes(health: Health) -> dict[str, Handler]:
    return {"/healthz": _check_handler(health.live), "/readyz": _check_handler(health.ready)}


def metrics_routes() -> dict[str, Handler]:
    async def handle(_: web.Request) -> web.StreamResponse:
        body = prometheus_client.generate_latest()
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    return {"/metrics": handle}


def _check_handler(check: Check) -> Handler:
    async def handle(_: web.Request) -> web.StreamResponse:
        ok, reason = check()
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    return handle


async def serve(port: int, routes: Mapping[str, Handler]) -> web.AppRunner:
    """Serve `routes` on `port`; the caller stops it with `await runner.cleanup()`."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # Every interface, IPv4 and IPv6: probes come from the kubelet at the pod's IP, which is
    # IPv6 on IPv6-only clusters.
    await web.TCPSite(runner, None, port).start()
    return runner
