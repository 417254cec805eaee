"""The benchmark's pods: created bound to a node no kubelet (nor kwok) manages, their status
driven only by the benchmark through the status subresource, so every transition is ours.

The node is a plain Node object kept healthy by renewing its Lease, as a kubelet would:
without that the node lifecycle controller marks the node unknown after its grace period,
then flips every pod on it to Ready=False and evicts them (pods on a node name with no Node
object are deleted by the pod GC controller instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from bench.kubeapi import JSON, MERGE_PATCH, KubeApi, Timed
from etcd_registrar.readiness import GATE

SERVICE = "bench"
PORT = 8080
GRACE = 300  # a graceful delete leaves the pod terminating until we force-delete it


class State(Enum):
    READY = "ready"
    UNREADY = "unready"
    TERMINATING = "terminating"


def pod_ip(index: int) -> str:
    return f"10.200.{index // 250}.{index % 250 + 1}"


def _now(micro: bool = False) -> str:
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.now(UTC).strftime(fmt)


def pod_manifest(name: str, node: str, gated: bool = False) -> JSON:
    """A pod of the benchmark's service; `gated`: it declares the operator's readiness gate."""
    manifest: JSON = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": SERVICE},
            "annotations": {"etcd-registrar.io/service": SERVICE},
        },
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": GRACE,
            "containers": [{"name": "app", "image": "pause", "ports": [{"containerPort": PORT}]}],
        },
    }
    if gated:
        manifest["spec"]["readinessGates"] = [{"conditionType": GATE}]
    return manifest


def pod_status(index: int, ready: bool) -> JSON:
    """A Running pod's status; Ready (and ContainersReady) as asked. A gated pod's Ready is
    ignored by the operator, which reads ContainersReady and the gates."""
    flag = "True" if ready else "False"
    ip = pod_ip(index)
    return {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": "10.243.255.1",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": flag},
            {"type": "Ready", "status": flag},
        ],
    }


class NodeKeeper:
    """A Node the benchmark's pods are bound to, reported healthy for as long as it runs.

    It has its own connection: queued behind a burst of thousands of requests, a heartbeat
    came 40 s late once, the node went NotReady and the node lifecycle controller began
    flipping every pod to Ready=False (at its 10 requests/s). `max_gap` says how close a
    run came to that (the grace period is 40-50 s).
    """

    RENEW = 5.0

    def __init__(self, kubeconfig: Path, name: str) -> None:
        self.api, self.name = KubeApi(kubeconfig, concurrency=2), name
        self._task: asyncio.Task[None] | None = None
        self._last_beat = 0.0
        self.max_gap = 0.0

    async def start(self) -> None:
        await self.api.__aenter__()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": {"etcd-registrar.io/bench": "true"}},
        }
        await self.api.call("POST", "/api/v1/nodes", node, ok=(201, 409))
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40},
        }
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        await self.api.call("POST", path, lease, ok=(201, 409))
        await self._heartbeat()
        self._task = asyncio.create_task(self._loop())

    async def _heartbeat(self) -> None:
        now = _now()
        status = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [{"type": "InternalIP", "address": "10.243.255.1"}],
        }
        await self.api.call(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            {"status": status},
            content_type=MERGE_PATCH,
        )
        await self.api.call(
            "PATCH",
            f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}",
            {"spec": {"renewTime": _now(micro=True)}},
            content_type=MERGE_PATCH,
        )
        beat = time.monotonic()
        if self._last_beat:
            self.max_gap = max(self.max_gap, beat - self._last_beat)
        self._last_beat = beat

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.RENEW)
            with contextlib.suppress(Exception):  # a missed beat is retried next time
                await self._heartbeat()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.api.call("DELETE", f"/api/v1/nodes/{self.name}", ok=(200, 404))
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        await self.api.call("DELETE", path, ok=(200, 404))
        await self.api.__aexit__(None, None, None)


async def gather_timed(calls: Iterable[Awaitable[Timed]]) -> tuple[list[Timed], float]:
    """Run the calls concurrently (the client bounds concurrency); results and wall time."""
    started = time.monotonic()
    results = await asyncio.gather(*calls)
    return list(results), time.monotonic() - started


class Population:
    """N pods `p-0 .. p-{N-1}` and the state the benchmark last gave each."""

    def __init__(
        self, api: KubeApi, namespace: str, node: str, size: int, gated: bool = False
    ) -> None:
        self.api, self.namespace, self.node, self.gated = api, namespace, node, gated
        self.names = [f"p-{i}" for i in range(size)]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.state: dict[str, State] = {}

    def expected_keys(self) -> int:
        return sum(1 for s in self.state.values() if s is State.READY)

    async def create(self) -> dict[str, Any]:
        """Create every pod, then make every pod Running and Ready; the two times."""
        _, created = await gather_timed(
            self.api.create_pod(self.namespace, pod_manifest(n, self.node, self.gated))
            for n in self.names
        )
        _, readied = await gather_timed(self.set_ready(n, True) for n in self.names)
        return {"create_seconds": round(created, 2), "ready_seconds": round(readied, 2)}

    async def set_ready(self, name: str, ready: bool) -> Timed:
        result = await self.api.patch_pod_status(
            self.namespace, name, pod_status(self.index[name], ready)
        )
        self.state[name] = State.READY if ready else State.UNREADY
        return result

    async def terminate(self, name: str) -> Timed:
        """Graceful delete: deletionTimestamp set, the pod stays (no kubelet confirms)."""
        result = await self.api.delete_pod(self.namespace, name, GRACE)
        self.state[name] = State.TERMINATING
        return result

    async def recreate(self, name: str) -> Timed:
        """Force-delete a terminating pod, create it again (new UID) and make it ready; the
        returned timing is the status change that makes it ready."""
        await self.api.delete_pod(self.namespace, name, 0)
        await self.api.create_pod(self.namespace, pod_manifest(name, self.node, self.gated))
        return await self.set_ready(name, True)

    async def reset(self) -> None:
        """Every pod back to Ready (the state every scenario starts from)."""

        async def fix(name: str) -> None:
            if self.state[name] is State.TERMINATING:
                await self.recreate(name)
            elif self.state[name] is State.UNREADY:
                await self.set_ready(name, True)

        await asyncio.gather(*(fix(n) for n in self.names))

    async def burst(self, ready: bool) -> tuple[list[Timed], float]:
        """Flip every pod's readiness at once (as fast as the API server takes it)."""
        return await gather_timed(self.set_ready(n, ready) for n in self.names)

    async def delete_all(self) -> None:
        await self.api.delete_all_pods(self.namespace)
        self.state.clear()
