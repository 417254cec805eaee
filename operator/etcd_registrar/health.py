"""/healthz (liveness) and /readyz (readiness) over HTTP, fed by two callables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Check = Callable[[], tuple[bool, str]]


async def serve(port: int, *, live: Check, ready: Check) -> web.AppRunner:
    """Start the probe server on `port`; the caller stops it with `await runner.cleanup()`."""

    def endpoint(check: Check) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(_: web.Request) -> web.StreamResponse:
            ok, reason = check()
            return web.Response(status=200 if ok else 503, text=reason + "\n")

        return handle

    app = web.Application()
    app.router.add_get("/healthz", endpoint(live))
    app.router.add_get("/readyz", endpoint(ready))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - probes come from the kubelet
    return runner
