"""The readiness gate (issue #14, docs/annotations.md#readiness-gate): gated pods turn Ready
only once their key is in etcd, so a rolling update waits for discoverability."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from etcd_registrar.etcd import WatchEvent
from etcd_registrar.readiness import GATE
from tests.harness import (
    Cluster,
    assert_stays,
    deployment_manifest,
    wait_for,
)
from tests.operator_process import ConsumerWatch, OperatorProcess, registry_keys

pytestmark = pytest.mark.e2e


@pytest.fixture
def operator(cluster: Cluster, namespace: str, crd: None) -> Iterator[OperatorProcess]:
    """An operator writing under /<namespace>: keys a previous test left on their leases
    are not counted."""
    proc = OperatorProcess(
        cluster, namespace, "--resync", "2s", "--default-prefix", f"/{namespace}"
    )
    proc.start()
    yield proc
    proc.stop()


def gated(name: str, replicas: int, **annotations: str) -> dict[str, Any]:
    """A Deployment whose pods declare the gate and opt in as service `name`; rolling
    updates keep every replica (maxSurge 1, maxUnavailable 0)."""
    manifest = deployment_manifest(
        name, replicas, annotations={"etcd-registrar.io/service": name, **annotations}
    )
    manifest["spec"]["template"]["spec"]["readinessGates"] = [{"conditionType": GATE}]
    manifest["spec"]["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    return manifest


def conditions(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in pod.get("status", {}).get("conditions") or []}


def pods(cluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-n", namespace, "-l", f"app={app}")[
        "items"
    ]
    return items


def managed(cluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    """The pods of `app` with the record of who wrote which fields (managedFields)."""
    raw = cluster.get_json("pods", "-n", namespace, "-l", f"app={app}", "--show-managed-fields")
    items: list[dict[str, Any]] = raw["items"]
    return items


def ready(pod: dict[str, Any]) -> bool:
    return conditions(pod).get("Ready", {}).get("status") == "True"


def gate_of(pod: dict[str, Any]) -> tuple[str, str] | None:
    gate = conditions(pod).get(GATE)
    return (gate["status"], gate.get("reason", "")) if gate else None


def patch_condition(cluster: Cluster, namespace: str, pod: str, ctype: str, status: str) -> None:
    patch = {"status": {"conditions": [{"type": ctype, "status": status}]}}
    cluster.kubectl(
        *("patch", "pod", pod, "-n", namespace, "--subresource=status", "--type=strategic"),
        *("-p", json.dumps(patch)),
    )


def counts_by_revision(start: set[str], events: list[WatchEvent]) -> list[int]:
    """How many keys a consumer held after each revision, from `start` on (the changes of
    one transaction count together, as a consumer gets them)."""
    keys, counts = set(start), [len(start)]
    for i, event in enumerate(events):
        if event.kind == "PUT":
            keys.add(event.key)
        else:
            keys.discard(event.key)
        if i + 1 == len(events) or events[i + 1].revision != event.revision:
            counts.append(len(keys))
    return counts


def rollout_complete(cluster: Cluster, namespace: str, name: str, replicas: int) -> bool:
    dep = cluster.get_json("deployment", name, "-n", namespace)
    status = dep.get("status", {})
    return bool(
        status.get("observedGeneration") == dep["metadata"]["generation"]
        and status.get("updatedReplicas") == replicas
        and status.get("readyReplicas") == replicas
        and status.get("replicas") == replicas
    )


def test_local_cluster_computes_ready_from_the_gates(cluster: Cluster, namespace: str) -> None:
    """kwok's default stages set every gate condition True themselves; the local cluster's
    must compute Ready as a kubelet does: ContainersReady and every gate True."""
    manifest = gated("plain", 1)
    manifest["spec"]["template"]["spec"]["readinessGates"].append(
        {"conditionType": "example.com/other"}
    )
    cluster.create_deployment(namespace, manifest)
    pod = wait_for(
        lambda: next(
            (p for p in pods(cluster, namespace, "plain") if p["status"].get("podIP")), None
        ),
        30,
        message="the gated pod has an IP",
    )
    name = pod["metadata"]["name"]

    def get() -> dict[str, Any]:
        got: dict[str, Any] = cluster.get_json("pod", name, "-n", namespace)
        return got

    assert conditions(get())["ContainersReady"]["status"] == "True"
    assert_stays(lambda: not ready(get()) and gate_of(get()) is None, 3, message="not Ready")
    patch_condition(cluster, namespace, name, GATE, "True")
    assert_stays(lambda: not ready(get()), 2, message="Ready with one gate still missing")
    patch_condition(cluster, namespace, name, "example.com/other", "True")
    wait_for(lambda: ready(get()), 10, message="Ready once every gate is True")
    patch_condition(cluster, namespace, name, GATE, "False")
    wait_for(lambda: not ready(get()), 10, message="not Ready once a gate turns False")
    patch_condition(cluster, namespace, name, GATE, "True")
    wait_for(lambda: ready(get()), 10, message="Ready again")
    patch_condition(cluster, namespace, name, "ContainersReady", "False")
    wait_for(lambda: not ready(get()), 10, message="not Ready once the containers are not")


def test_gated_pod_is_never_ready_without_its_key(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.create_deployment(namespace, gated("goods", 3))
    cluster.create_deployment(
        namespace,
        deployment_manifest("plain", 2, annotations={"etcd-registrar.io/service": "plain"}),
    )
    violations: list[str] = []

    def all_ready() -> bool:
        seen = pods(cluster, namespace, "goods")  # the pods first, then etcd: a key that
        keys = registry_keys(cluster.etcd_endpoints, f"/{namespace}/goods/")  # follows is fine
        for pod in seen:
            if ready(pod) and f"/{namespace}/goods/{pod['metadata']['name']}" not in keys:
                violations.append(pod["metadata"]["name"])
        return len(seen) == 3 and all(ready(p) for p in seen)

    wait_for(all_ready, 60, interval=0.05, message="3 gated pods Ready")
    assert not violations, f"Ready without a key in etcd: {violations}"
    for pod in pods(cluster, namespace, "goods"):
        assert gate_of(pod) == ("True", "Registered"), pod["status"]
        assert conditions(pod)[GATE]["message"].startswith("in etcd: ")

    # Containers not ready: the key goes and the gate turns False, so that the pod is not
    # Ready again before its key is back.
    name = pods(cluster, namespace, "goods")[0]["metadata"]["name"]
    key = f"/{namespace}/goods/{name}"
    patch_condition(cluster, namespace, name, "ContainersReady", "False")
    wait_for(
        lambda: gate_of(cluster.get_json("pod", name, "-n", namespace)) == ("False", "NotReady"),
        15,
        message="gate False, NotReady",
    )
    wait_for(
        lambda: key not in registry_keys(cluster.etcd_endpoints, f"/{namespace}/goods/"),
        10,
        message="the key deleted",
    )
    patch_condition(cluster, namespace, name, "ContainersReady", "True")
    wait_for(all_ready, 15, interval=0.05, message="Ready again")
    assert not violations, f"Ready without a key in etcd: {violations}"

    # Ungated pods in the same namespace: registered as before, and nothing written on them.
    plain = cluster.wait_deployment_serving(namespace, "plain", 2)
    wait_for(
        lambda: len(registry_keys(cluster.etcd_endpoints, f"/{namespace}/plain/")) == 2,
        30,
        message="ungated pods registered",
    )
    for pod in pods(cluster, namespace, "plain"):
        assert gate_of(pod) is None
    operator_writers = {
        entry["manager"]
        for pod in managed(cluster, namespace, "goods")
        for entry in pod["metadata"]["managedFields"]
        if GATE in json.dumps(entry.get("fieldsV1"))
    }
    assert operator_writers, "the gate's writer is recorded"
    assert len(plain) == 2
    for pod in managed(cluster, namespace, "plain"):
        writers = {e["manager"] for e in pod["metadata"]["managedFields"]}
        assert not writers & operator_writers, f"the operator wrote on {pod['metadata']['name']}"


def test_rollout_keeps_capacity_and_waits_for_the_operator(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.create_deployment(namespace, gated("goods", 3))
    wait_for(
        lambda: rollout_complete(cluster, namespace, "goods", 3), 60, message="goods rolled out"
    )
    prefix = f"/{namespace}/goods/"
    with ConsumerWatch(cluster.etcd_endpoints, prefix) as consumer:
        before = set(registry_keys(cluster.etcd_endpoints, prefix))  # settled: as watched
        assert len(before) == 3
        restart(cluster, namespace)
        cluster.kubectl("rollout", "status", "deployment/goods", "-n", namespace, "--timeout=90s")
        wait_for(
            lambda: len(registry_keys(cluster.etcd_endpoints, prefix)) == 3,
            30,
            message="3 keys after the rollout",
        )
        wait_for(
            lambda: not set(registry_keys(cluster.etcd_endpoints, prefix)) & before,
            30,
            message="the old pods' keys replaced",
        )
    counts = counts_by_revision(before, consumer.events)
    assert len(counts) > 3, counts  # the rollout changed the keys
    assert min(counts) >= 3, f"a consumer saw fewer than 3 endpoints: {counts}"

    # Without the operator a new pod never turns Ready, so the rollout waits.
    operator.stop()
    restart(cluster, namespace)

    def new_pod_waiting() -> bool:
        fresh = [p for p in pods(cluster, namespace, "goods") if gate_of(p) is None]
        return bool(fresh) and all(
            conditions(p).get("ContainersReady", {}).get("status") == "True" for p in fresh
        )

    wait_for(new_pod_waiting, 30, message="a new pod with ready containers")
    assert_stays(
        lambda: (
            new_pod_waiting()
            and not any(ready(p) for p in pods(cluster, namespace, "goods") if gate_of(p) is None)
            and not rollout_complete(cluster, namespace, "goods", 3)
        ),
        5,
        message="the rollout waits for the operator",
    )
    operator.start()
    cluster.kubectl("rollout", "status", "deployment/goods", "-n", namespace, "--timeout=90s")
    for pod in pods(cluster, namespace, "goods"):
        if not pod["metadata"].get("deletionTimestamp"):
            assert gate_of(pod) == ("True", "Registered")


def test_conflict_and_invalid_input_keep_the_gate_false(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.create_deployment(
        namespace, gated("badport", 1, **{"etcd-registrar.io/port": "nosuch"})
    )
    cluster.apply(
        {
            "apiVersion": "etcd-registrar.io/v1alpha1",
            "kind": "ServiceRegistration",
            "metadata": {"name": "same"},
            "spec": {"key": "{prefix}/{service}/one", "selector": {"matchLabels": {"app": "same"}}},
        },
        namespace,
    )
    cluster.create_deployment(namespace, gated("same", 2))

    def gates(app: str) -> list[tuple[str, str] | None]:
        return sorted((gate_of(p) for p in pods(cluster, namespace, app)), key=str)

    wait_for(lambda: gates("badport") == [("False", "InvalidSpec")], 30, message="InvalidSpec")
    wait_for(
        lambda: gates("same") == [("False", "Conflict"), ("True", "Registered")],
        30,
        message="one pod Registered, the other in Conflict",
    )
    for pod in pods(cluster, namespace, "badport"):
        assert "nosuch" in conditions(pod)[GATE]["message"]
        assert not ready(pod)
    losers = [p for p in pods(cluster, namespace, "same") if gate_of(p) == ("False", "Conflict")]
    assert "already held by the older pod" in conditions(losers[0])[GATE]["message"]
    assert_stays(
        lambda: gates("same") == [("False", "Conflict"), ("True", "Registered")],
        3,
        message="the conflict stays refused",
    )


def test_the_standby_sets_the_gate_once_it_leads(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """Two replicas: the gate is set by whichever leads; with the leader killed, the standby
    takes over and sets the gate of the pods created since."""
    standby = OperatorProcess(
        cluster, namespace, "--resync", "2s", "--default-prefix", f"/{namespace}"
    ).start()
    try:
        cluster.create_deployment(namespace, gated("goods", 2))
        wait_for(
            lambda: rollout_complete(cluster, namespace, "goods", 2), 60, message="2 gated pods"
        )
        operator.kill()
        cluster.scale(namespace, "goods", 3)
        wait_for(
            lambda: rollout_complete(cluster, namespace, "goods", 3),
            60,
            message="the new pod Ready through the standby",
        )
        for pod in pods(cluster, namespace, "goods"):
            assert gate_of(pod) == ("True", "Registered")
    finally:
        standby.stop()


def restart(cluster: Cluster, namespace: str) -> None:
    """`kubectl rollout restart`, again while kubectl refuses a second restart within the
    same second (its restartedAt annotation has a resolution of one second)."""
    wait_for(
        lambda: cluster.kubectl(
            "rollout", "restart", "deployment/goods", "-n", namespace, check=False
        ),
        10,
        message="the rollout restart accepted",
    )
