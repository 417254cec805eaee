"""Pods: listed in pages, then watched, each handed to the controller and dropped.

kopf watches pods well but keeps far more of them than this operator needs: it decodes
every page of the initial list ahead of its per-pod workers, and each worker holds its
pod's whole body for seconds (about 300 MiB at 10,000 pods, measured with memray). Here
one page is decoded, handed over and freed before the next is read, and a watch event
waits in a short queue; the controller keeps only its small PodView of each pod.

The Kubernetes client is synchronous: pages are fetched in a worker thread, and each
watch stream is read by a daemon thread of its own (a blocked read must never hold up
the operator's exit). Events are handed over in order on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.watch.watch import iter_resp_lines

from etcd_registrar.kube import Kube
from etcd_registrar.supervisor import Backoff

logger = logging.getLogger(__name__)

PodHandler = Callable[[str | None, Mapping[str, Any]], None]  # (None on list, or ADDED...)

LIST_PAGE = 500  # pods per page of a list: the most decoded at once
WATCH_SECONDS = 300  # the API server ends a watch after this; it is resumed, not relisted
IDLE_LIMIT = 90.0  # no byte for this long (bookmarks come every minute): reconnect
QUEUE_LIMIT = 1000  # watch events read ahead of the controller, at most
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # back-off between failed lists/watches
QUICK_END = 1.0  # a watch that ends this soon having delivered nothing is backed off
_END = object()  # the watch stream ended (timeout or EOF): resume from the last version


class Expired(Exception):
    """The resource version is too old to watch from (410 Gone): list again."""


class PodWatcher:
    """Follows the pods of `kube`'s namespaces and pod selector."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def run(self, handle: PodHandler) -> None:
        """List and watch every scope for ever, calling `handle` for each pod seen."""
        await asyncio.gather(*(self._follow(scope, handle) for scope in self.kube.scopes))

    async def _follow(self, namespace: str | None, handle: PodHandler) -> None:
        """List once, then watch from the last version seen: a failed or ended watch is
        resumed, and only a version too old to watch from (410 Gone) means a relist."""
        scope = namespace or "all namespaces"
        retry = Backoff(RETRY_FIRST, RETRY_MAX)
        version: str | None = None
        while True:
            started = time.monotonic()
            try:
                if version is None:
                    version = await self.list(namespace, handle)
                resumed = await self.watch(namespace, version, handle)
            except Expired:
                logger.info("pod watch expired in %s; listing again", scope)
                version, resumed = None, None
            except Exception as exc:
                delay = retry.delay()
                logger.warning(
                    "pod list/watch in %s failed (%s); retry in %.1fs", scope, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            if resumed == version and time.monotonic() - started < QUICK_END:
                await retry.sleep()  # ended at once with nothing: no hot loop of requests
            else:
                retry.reset()
            version = resumed

    async def list(self, namespace: str | None, handle: PodHandler) -> str:
        """Hand every pod in scope to `handle` (type None), a page at a time; return the
        list's resource version to watch from."""
        token: str | None = None
        while True:
            # The page is handed over in a call of its own: no reference to it is left
            # while the next one is read and decoded, so one page is in memory, not two.
            token, version = _hand_over(
                await asyncio.to_thread(self._page, namespace, token), handle
            )
            if not token:
                return version

    def _page(self, namespace: str | None, token: str | None) -> dict[str, Any]:
        response = self.kube.pods_raw(
            namespace, limit=LIST_PAGE, _continue=token, _request_timeout=self.kube.timeout
        )
        page: dict[str, Any] = json.loads(response.data)
        return page

    async def watch(self, namespace: str | None, version: str, handle: PodHandler) -> str:
        """Hand each change after `version` to `handle` until the stream ends; return the
        last version seen. Raises Expired when `version` is too old."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        room = threading.Semaphore(QUEUE_LIMIT)  # back-pressure on the reading thread
        stop = threading.Event()

        def deliver(item: Any) -> None:
            while not stop.is_set():
                if room.acquire(timeout=0.5):
                    with contextlib.suppress(RuntimeError):  # the loop is closed: exiting
                        loop.call_soon_threadsafe(events.put_nowait, item)
                    return

        def read() -> None:
            try:
                response = self.kube.pods_raw(
                    namespace,
                    watch=True,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                    _request_timeout=(self.kube.timeout[0], IDLE_LIMIT),
                )
                try:
                    for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                        if stop.is_set():
                            return
                        deliver(json.loads(line))
                finally:
                    response.release_conn()
            except Exception as exc:  # handed over and raised on the loop
                deliver(exc)
            else:
                deliver(_END)

        threading.Thread(target=read, name="pod-watch", daemon=True).start()
        try:
            while True:
                item = await events.get()
                room.release()
                if item is _END:
                    return version
                if isinstance(item, Exception):
                    raise item
                kind, pod = item.get("type"), item.get("object") or {}
                if kind == "ERROR":
                    if pod.get("code") == 410:
                        raise Expired(pod.get("message"))
                    raise RuntimeError(f"watch error: {pod.get('message') or pod}")
                version = pod["metadata"]["resourceVersion"]
                if kind != "BOOKMARK":
                    handle(kind, pod)
        finally:
            stop.set()


def _hand_over(page: dict[str, Any], handle: PodHandler) -> tuple[str | None, str]:
    """Hand a page's pods to `handle`; return its continue token and resource version."""
    for pod in page.get("items") or []:
        handle(None, pod)
    meta = page.get("metadata") or {}
    return meta.get("continue"), str(meta.get("resourceVersion"))
