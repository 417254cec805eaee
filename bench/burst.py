"""Burst benchmark: N annotated pods become ready at once; how fast do their keys appear?

Pods are created bound to kwok nodes (no controller-manager or scheduler in the path), kwok
makes them Running and Ready. The benchmark watches the API server (when each pod is first
seen Ready with an IP) and the registry etcd (when each key is first PUT) from one process,
so both timestamps share a clock. Latency = key seen - Ready seen.

    .venv/bin/python -m bench.burst --pods 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import watch

from etcd_registrar.etcd import Etcd, EtcdConfig
from tests.harness import Cluster, wait_for
from tests.operator_process import CRD_FILE, OperatorProcess

RESULTS = Path(__file__).parent / "results"
SERVICE = "burst"


def pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {"etcd-registrar.io/service": SERVICE}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "pause", "ports": [{"containerPort": 80}]}],
        },
    }


class ReadyWatch(threading.Thread):
    """Records when each pod of the namespace is first seen Ready with an IP."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        super().__init__(daemon=True)
        self.core = __import__("kubernetes").client.CoreV1Api(cluster.api_client())
        self.namespace, self.seen, self.stop_flag = namespace, {}, False

    def run(self) -> None:
        stream = watch.Watch()
        for event in stream.stream(self.core.list_namespaced_pod, self.namespace):
            obj = event["object"]
            ready = any(
                c.type == "Ready" and c.status == "True" for c in obj.status.conditions or []
            )
            if ready and obj.status.pod_ip:
                self.seen.setdefault(obj.metadata.name, time.monotonic())
            if self.stop_flag:
                stream.stop()


async def watch_keys(endpoints: str, prefix: str, seen: dict[str, float], n: int) -> None:
    etcd = Etcd(EtcdConfig(endpoints=tuple(endpoints.split(","))))
    try:
        _, revision = await etcd.get_prefix(prefix)
        async for event in etcd.watch_prefix(prefix, revision + 1):
            if event.kind == "PUT":
                seen.setdefault(event.key.rsplit("/", 1)[1], time.monotonic())
            if len(seen) >= n:
                return
    finally:
        await etcd.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mib(pid: int) -> dict[str, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}


def run(n: int) -> dict[str, Any]:
    cluster = Cluster.ensure_up()
    cluster.kubectl("apply", "-f", str(CRD_FILE))
    namespace = cluster.create_namespace("bench-burst")
    nodes = cluster.kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").split()
    operator = OperatorProcess(cluster, namespace).start()
    keys: dict[str, float] = {}
    watcher = threading.Thread(
        target=lambda: asyncio.run(
            watch_keys(cluster.etcd_endpoints, f"/services/{SERVICE}/", keys, n)
        ),
        daemon=True,
    )
    ready = ReadyWatch(cluster, namespace)
    watcher.start()
    ready.start()
    try:
        manifest = yaml.safe_dump_all(pod(f"p-{i}", nodes[i % len(nodes)]) for i in range(n))
        started = time.monotonic()
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, timeout=600)
        created = time.monotonic()
        wait_for(lambda: len(keys) >= n, 600, interval=0.2, message=f"{n} keys in etcd")
        wait_for(lambda: len(ready.seen) >= n, 60, message="all pods seen ready")
        latencies = [keys[p] - ready.seen[p] for p in ready.seen if p in keys]
        result = {
            "pods": n,
            "create_seconds": round(created - started, 2),
            "all_keys_after_last_ready_seconds": round(
                max(keys.values()) - max(ready.seen.values()), 3
            ),
            "all_keys_after_start_seconds": round(max(keys.values()) - started, 2),
            "latency_ms": {
                "p50": round(1000 * statistics.median(latencies), 1),
                "p90": round(1000 * percentile(latencies, 0.90), 1),
                "p99": round(1000 * percentile(latencies, 0.99), 1),
                "max": round(1000 * max(latencies), 1),
            },
            "operator_rss_mib": rss_mib(operator.proc.pid) if operator.proc else {},
        }
    finally:
        ready.stop_flag = True
        operator.stop()
        cluster.delete_namespace(namespace)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    args = parser.parse_args()
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), **run(args.pods)}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{result['when'][:10]}-burst-{args.pods}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
