"""The operator against the local cluster, through real Deployments (issue #3's scenarios)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from etcd_registrar.model import PORT_RULE, ServiceRegistrationSpec
from tests.harness import Cluster, KubectlError, PodInfo, deployment_manifest, wait_for
from tests.operator_process import OperatorProcess, delete_key, registry_keys

pytestmark = pytest.mark.e2e

TTL = 3


@pytest.fixture
def operator(cluster: Cluster, namespace: str, crd: None) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(cluster, namespace, "--resync", "2s").start()
    yield proc
    proc.stop()


def registration(name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "etcd-registrar.io/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": name},
        "spec": spec,
    }


def expected_keys(pods: list[PodInfo], prefix: str, service: str, port: int) -> dict[str, str]:
    return {f"{prefix}/{service}/{p.name}": f"{p.ip}:{port}" for p in pods if p.serving}


def wait_registry(
    cluster: Cluster, namespace: str, prefix: str, timeout: float = 30
) -> dict[str, str]:
    """Poll until etcd holds exactly the keys of the deployment's serving pods."""

    def matches() -> dict[str, str] | None:
        pods = cluster.pods_of_deployment(namespace, "goods")
        want = expected_keys(pods, prefix, "goods", 80)
        have = registry_keys(cluster.etcd_endpoints, f"{prefix}/goods/")
        return have if have == want else None

    return wait_for(matches, timeout, message=f"registry under {prefix} matches serving pods")


def goods(cluster: Cluster, namespace: str, prefix: str, replicas: int = 3) -> list[PodInfo]:
    cluster.apply(registration("goods", prefix=prefix, ttl=TTL, format="address"), namespace)
    annotations = {"etcd-registrar.io/service": "goods"}
    cluster.create_deployment(
        namespace, deployment_manifest("goods", replicas, annotations=annotations)
    )
    return cluster.wait_deployment_serving(namespace, "goods", replicas)


def operator_managers(cluster: Cluster, namespace: str, registration: str) -> set[str]:
    """The field managers the operator writes as: the one its status patches of
    `registration` were recorded under (its Kubernetes client), and kopf's."""
    managed = cluster.get_json("sreg", registration, "-n", namespace, "--show-managed-fields")
    found = {
        entry["manager"]
        for entry in managed["metadata"].get("managedFields") or []
        if entry.get("subresource") == "status"
    }
    assert found, f"no status patch of {registration} recorded: {managed['metadata']}"
    return found | {"kopf"}


def assert_pods_untouched(cluster: Cluster, namespace: str) -> None:
    """Guarantee 7: the operator wrote nothing onto the namespace's pods. The API server
    records every writer of an object (managedFields), so none may be the operator; and
    nothing kopf leaves behind when it writes (its annotations, finalizer, status key) is
    there. Kubelets (real or kwok) write status fields of their own; those are not checked."""
    managers = operator_managers(cluster, namespace, "goods")
    pods = cluster.get_json("pods", "-n", namespace, "--show-managed-fields")["items"]
    assert pods
    for raw in pods:
        meta = raw["metadata"]
        writers = {entry["manager"] for entry in meta.get("managedFields") or []}
        assert not writers & managers, f"{meta['name']} written by {writers & managers}"
        assert not [f for f in meta.get("finalizers") or [] if "kopf" in f], meta
        assert not [a for a in meta.get("annotations") or {} if "kopf" in a], meta
        assert "kopf" not in raw.get("status", {}), raw["status"]


def test_goods_scenario(
    cluster: Cluster, namespace: str, prefix: str, operator: OperatorProcess
) -> None:
    goods(cluster, namespace, prefix)
    keys = wait_registry(cluster, namespace, prefix)
    assert len(keys) == 3 and all(v.endswith(":80") for v in keys.values())

    def status() -> dict[str, Any]:
        found: dict[str, Any] = cluster.get_json("sreg", "goods", "-n", namespace)
        status: dict[str, Any] = found.get("status", {})
        return status

    wait_for(lambda: status().get("endpoints") == 3, 15, message="status.endpoints == 3")
    assert_pods_untouched(cluster, namespace)
    ready = {c["type"]: c for c in status()["conditions"]}["Ready"]
    assert ready["status"] == "True" and ready["reason"] == "Synced"

    for replicas in (4, 3):
        cluster.scale(namespace, "goods", replicas)
        cluster.wait_deployment_serving(namespace, "goods", replicas)
        assert len(wait_registry(cluster, namespace, prefix)) == replicas

    pod = cluster.pods_of_deployment(namespace, "goods")[0]
    key = f"{prefix}/goods/{pod.name}"
    cluster.set_pod_ready(namespace, pod.name, False)
    wait_for(
        lambda: key not in registry_keys(cluster.etcd_endpoints, prefix),
        10,
        message="unready pod's key removed",
    )
    cluster.set_pod_ready(namespace, pod.name, True)
    wait_for(
        lambda: key in registry_keys(cluster.etcd_endpoints, prefix),
        10,
        message="ready-again pod's key back",
    )

    cluster.kubectl("delete", "pod", pod.name, "-n", namespace, "--wait=false")
    wait_for(
        lambda: key not in registry_keys(cluster.etcd_endpoints, prefix),
        10,
        message="deleted pod's key removed",
    )
    cluster.wait_deployment_serving(namespace, "goods", 3)
    wait_registry(cluster, namespace, prefix)

    moved = f"{prefix}-moved"
    cluster.kubectl(
        "patch",
        "sreg",
        "goods",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"prefix": moved}}),
    )
    wait_registry(cluster, namespace, moved)
    wait_for(
        lambda: not registry_keys(cluster.etcd_endpoints, f"{prefix}/"),
        10,
        message="old prefix emptied",
    )


def test_operator_crash_and_restart(
    cluster: Cluster, namespace: str, prefix: str, operator: OperatorProcess
) -> None:
    goods(cluster, namespace, prefix)
    wait_registry(cluster, namespace, prefix)
    operator.kill()
    wait_for(
        lambda: not registry_keys(cluster.etcd_endpoints, f"{prefix}/"),
        3 * TTL + 5,
        message="keys expire with the lease once the operator is gone",
    )
    operator.start()
    wait_registry(cluster, namespace, prefix)


def test_sweep_restores_keys_deleted_behind_its_back(
    cluster: Cluster, namespace: str, prefix: str, operator: OperatorProcess
) -> None:
    goods(cluster, namespace, prefix)
    keys = wait_registry(cluster, namespace, prefix)
    victim = sorted(keys)[0]
    delete_key(cluster.etcd_endpoints, victim)
    wait_for(
        lambda: registry_keys(cluster.etcd_endpoints, prefix).get(victim) == keys[victim],
        15,
        message="sweep restored the deleted key",
    )


def test_bad_annotations_warn_and_spare_other_pods(
    cluster: Cluster, namespace: str, prefix: str, operator: OperatorProcess
) -> None:
    goods(cluster, namespace, prefix, replicas=2)
    wait_registry(cluster, namespace, prefix)
    bad = {"etcd-registrar.io/service": "Bad/Name", "etcd-registrar.io/port": "70000"}
    cluster.create_deployment(namespace, deployment_manifest("broken", 1, annotations=bad))

    def warning() -> str | None:
        events = cluster.get_json("events", "-n", namespace)["items"]
        texts = [e["message"] for e in events if e.get("reason") == "InvalidRegistration"]
        return texts[0] if texts else None

    message = wait_for(warning, 20, message="a Warning Event on the broken pod")
    assert "etcd-registrar.io/service" in message
    assert len(wait_registry(cluster, namespace, prefix)) == 2


def test_api_server_rejects_bad_templates(cluster: Cluster, namespace: str, crd: None) -> None:
    bad = registration("bad", key="{prefix}/{pod.__class__}")
    with pytest.raises(KubectlError) as refused:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad))
    assert "may only use the placeholders" in str(refused.value)


PORTS: list[int | str] = [
    *(1, 65535, 8080, "http", "grpc-web", "a", "metrics-export", "x" * 15),  # valid
    *(0, 65536, 70000, "x" * 16, "metrics-exporter", "HTTP", "http_alt", "-http", "http-"),
]


@pytest.mark.parametrize("port", PORTS, ids=repr)
def test_api_server_and_operator_agree_on_ports(
    cluster: Cluster, namespace: str, crd: None, port: int | str
) -> None:
    """The CRD refuses exactly the ports the operator would refuse (a 16-character name used
    to pass the API server and end as an InvalidSpec condition)."""
    try:
        ServiceRegistrationSpec.model_validate({"port": port})
        valid = True
    except ValidationError:
        valid = False
    manifest = json.dumps(registration("ports", port=port))
    try:
        cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest)
        accepted, refusal = True, ""
    except KubectlError as exc:
        accepted, refusal = False, str(exc)
    assert accepted is valid, f"port {port!r}: operator valid={valid}, API server: {refusal}"
    if not accepted:
        assert f"port {PORT_RULE}" in refusal


def test_conflicting_keys_keep_the_oldest_pod(
    cluster: Cluster, namespace: str, prefix: str, operator: OperatorProcess
) -> None:
    """Two pods rendering one key: the oldest keeps it, the registration reports Conflict."""
    cluster.apply(registration("goods", prefix=prefix, key="{prefix}/{service}"), namespace)
    annotations = {"etcd-registrar.io/service": "goods"}
    cluster.create_deployment(namespace, deployment_manifest("goods", 1, annotations=annotations))
    (first,) = cluster.wait_deployment_serving(namespace, "goods", 1)
    key = f"{prefix}/goods"
    wait_for(
        lambda: registry_keys(cluster.etcd_endpoints, key) == {key: f"{first.ip}:80"},
        15,
        message="the single key holds the first pod",
    )
    cluster.scale(namespace, "goods", 2)
    (second,) = [
        p for p in cluster.wait_deployment_serving(namespace, "goods", 2) if p.name != first.name
    ]

    def conflict() -> dict[str, str] | None:
        status = cluster.get_json("sreg", "goods", "-n", namespace).get("status", {})
        found = {c["type"]: c for c in status.get("conditions") or []}.get("Conflict")
        return found if found and found["status"] == "True" else None

    assert second.name in wait_for(conflict, 15, message="Conflict condition")["message"]
    events = cluster.get_json("events", "-n", namespace)["items"]
    losers = {e["involvedObject"]["name"] for e in events if e.get("reason") == "Conflict"}
    assert losers == {second.name}
    assert registry_keys(cluster.etcd_endpoints, key) == {key: f"{first.ip}:80"}
