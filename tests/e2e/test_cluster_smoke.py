"""The cluster itself behaves like the real thing the operator relies on: Deployments make
pods that become Running and Ready with distinct IPs, scaling is followed, and a Ready
condition set through the status subresource stays as set (kwok does not undo it)."""

from __future__ import annotations

import pytest

from tests.harness import Cluster, assert_stays, deployment_manifest, wait_for

pytestmark = pytest.mark.e2e


def test_deployment_pods_follow_scaling(cluster: Cluster, namespace: str) -> None:
    cluster.create_deployment(namespace, deployment_manifest("web", replicas=3, port=80))
    three = cluster.wait_deployment_serving(namespace, "web", 3)
    assert len({p.ip for p in three}) == 3

    cluster.scale(namespace, "web", 4)
    four = cluster.wait_deployment_serving(namespace, "web", 4)
    assert {p.name for p in three} < {p.name for p in four}

    cluster.scale(namespace, "web", 3)
    after = cluster.wait_deployment_serving(namespace, "web", 3)
    assert {p.name for p in after} < {p.name for p in four}


def test_ready_condition_patched_via_status_sticks(cluster: Cluster, namespace: str) -> None:
    cluster.create_deployment(namespace, deployment_manifest("web", replicas=2))
    pod = cluster.wait_deployment_serving(namespace, "web", 2)[0].name

    def ready_replicas() -> int:
        status = cluster.get_json("deployment", "web", "-n", namespace)["status"]
        return int(status.get("readyReplicas", 0))

    cluster.set_pod_ready(namespace, pod, ready=False)
    wait_for(
        lambda: not cluster.get_pod(namespace, pod).ready,
        timeout=10,
        message=f"{pod} Ready=False not visible",
    )
    # Kubernetes' own controllers see it too (the ReplicaSet counts it unready) ...
    wait_for(lambda: ready_replicas() == 1, timeout=20, message="readyReplicas never dropped to 1")
    # ... and nothing flips it back: kwok's default stages only act on pods without an IP.
    assert_stays(
        lambda: not cluster.get_pod(namespace, pod).ready,
        duration=3,
        message=f"{pod} became Ready again without being told",
    )

    cluster.set_pod_ready(namespace, pod, ready=True)
    wait_for(
        lambda: cluster.get_pod(namespace, pod).ready,
        timeout=10,
        message=f"{pod} Ready=True not visible",
    )
    wait_for(lambda: ready_replicas() == 2, timeout=20, message="readyReplicas never back to 2")
