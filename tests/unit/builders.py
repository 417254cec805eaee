"""Small builders for the unit tests: pod bodies, registration bodies, endpoints."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from etcd_registrar import ANNOTATION_METADATA, ANNOTATION_PORT, ANNOTATION_SERVICE
from etcd_registrar.source import Endpoint

CREATED = "2024-01-01T00:00:00Z"

# The sample endpoint every format test renders (docs/formats.md).
SAMPLE: dict[str, Any] = {
    "service": "goods",
    "namespace": "shop",
    "pod": "goods-abc",
    "uid": "uid-goods-abc",
    "node": "node-1",
    "ip": "10.0.0.5",
    "port": 8080,
    "metadata": {"version": "v1"},
}


def opt_in(
    service: str | None = "goods",
    *,
    port: str | None = None,
    metadata: Mapping[str, Any] | str | None = None,
) -> dict[str, str]:
    """The opt-in annotations; `metadata` may be raw text to test bad input."""
    out: dict[str, str] = {}
    if service is not None:
        out[ANNOTATION_SERVICE] = service
    if port is not None:
        out[ANNOTATION_PORT] = port
    if metadata is not None:
        out[ANNOTATION_METADATA] = metadata if isinstance(metadata, str) else json.dumps(metadata)
    return out


def pod_body(
    *,
    name: str = "goods-abc",
    namespace: str = "shop",
    ip: str | None = "10.0.0.5",
    phase: str = "Running",
    ready: bool | None = True,
    deleting: bool = False,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    ports: Sequence[tuple[str | None, int]] = (("http", 8080),),
    created: str = CREATED,
    node: str = "node-1",
) -> dict[str, Any]:
    """A realistic pod body as the API server returns it; `ready=None` omits the condition."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "creationTimestamp": created,
        "labels": dict(labels or {"app": "goods"}),
        "resourceVersion": "42",
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    if deleting:
        metadata["deletionTimestamp"] = "2024-01-01T00:05:00Z"
    conditions: list[dict[str, str]] = [
        {"type": "PodScheduled", "status": "True"},
        {"type": "ContainersReady", "status": "True" if ready else "False"},
    ]
    if ready is not None:
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    status: dict[str, Any] = {"phase": phase, "conditions": conditions}
    if ip is not None:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    container_ports = [
        {"containerPort": number, "protocol": "TCP", **({"name": n} if n else {})}
        for n, number in ports
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "goods:1", "ports": container_ports}],
        },
        "status": status,
    }


def registration_body(
    spec: Mapping[str, Any], *, name: str = "goods", namespace: str = "shop"
) -> dict[str, Any]:
    return {
        "apiVersion": "etcd-registrar.io/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
        "spec": dict(spec),
    }


def endpoint(
    key: str,
    *,
    value: str = "10.0.0.5:8080",
    pod: str = "goods-a",
    created: str = CREATED,
    ttl: int = 10,
) -> Endpoint:
    return Endpoint(
        key=key,
        value=value,
        ttl=ttl,
        namespace="shop",
        service="goods",
        pod_uid=f"uid-{pod}",
        pod_name=pod,
        rank=(created, "shop", pod),
    )
