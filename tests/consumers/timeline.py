"""When each pod IP was serving (the readiness rule, docs/annotations.md), recorded from a
watch on a namespace's pods.

The consumer tests check every address a consumer ever showed against this record: an
address must belong to a pod that was serving at about that moment.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.harness import Cluster, PodInfo


class PodTimeline:
    """Serving intervals per pod IP, on the time.monotonic() clock, kept by a watch thread."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self._api = client.CoreV1Api(cluster.api_client())
        self.namespace = namespace
        self._lock = threading.Lock()
        self._pods: dict[str, tuple[str | None, bool]] = {}  # name -> (ip, serving)
        self._intervals: dict[str, list[tuple[float, float | None]]] = {}  # ip -> (start, end)
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-timeline", daemon=True)

    def start(self) -> PodTimeline:
        self._thread.start()
        if not self._synced.wait(30):
            raise AssertionError(f"pod watch in {self.namespace} did not start within 30s")
        return self

    def stop(self) -> None:
        """Ask the watch thread to end; it does within one watch round (2 s), unwaited."""
        self._stop.set()

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                    self._synced.set()
                stream: Any = watch.Watch().stream  # type: ignore[no-untyped-call]
                for event in stream(
                    self._api.list_namespaced_pod,
                    self.namespace,
                    resource_version=version,
                    timeout_seconds=2,  # comes back to look at the stop flag
                    deserialize=False,
                ):
                    pod = event["object"]
                    version = pod["metadata"]["resourceVersion"]
                    self._apply(pod, deleted=event["type"] == "DELETED")
            except Exception as exc:  # the API server may blip; a watch thread must not die
                if isinstance(exc, ApiException) and exc.status == 410:
                    version = None  # too old to resume: list again
                else:
                    self._stop.wait(0.2)

    def _list(self) -> str:
        # Raw JSON, camelCase as PodInfo.from_object reads it (not the client's models).
        response: Any = self._api.list_namespaced_pod(self.namespace, _preload_content=False)
        doc = json.loads(response.data)
        items = doc["items"]
        for pod in items:
            self._apply(pod, deleted=False)
        listed = {pod["metadata"]["name"] for pod in items}
        for name in set(self._pods) - listed:  # deleted while nobody watched
            self._apply({"metadata": {"name": name}}, deleted=True)
        return str(doc["metadata"]["resourceVersion"])

    def _apply(self, raw: dict[str, Any], deleted: bool) -> None:
        pod = PodInfo.from_object(raw)
        serving = pod.serving and not deleted
        now = time.monotonic()
        with self._lock:
            ip, was = self._pods.get(pod.name, (None, False))
            if was and ip and (not serving or ip != pod.ip):
                spans = self._intervals[ip]
                spans[-1] = (spans[-1][0], now)  # close the open interval
                was = False
            if serving and not was and pod.ip:
                self._intervals.setdefault(pod.ip, []).append((now, None))
            self._pods[pod.name] = (pod.ip, serving)

    def served(self, ip: str, at: float, grace: float) -> bool:
        """Was a pod with this IP serving at `at`, give or take `grace` seconds?"""
        with self._lock:
            return any(
                start - grace <= at and (end is None or at <= end + grace)
                for start, end in self._intervals.get(ip, [])
            )

    def describe(self, ip: str, since: float) -> str:
        """The IP's serving intervals, in seconds relative to `since`, for messages."""
        with self._lock:
            spans = [
                f"{s - since:+.2f}..{'now' if e is None else f'{e - since:+.2f}'}"
                for s, e in self._intervals.get(ip, [])
            ]
        return ", ".join(spans) or "never serving"
