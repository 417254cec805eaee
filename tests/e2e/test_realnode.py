"""The product on a real node (hack/realnode-up.sh): the image built from the Dockerfile and
installed with the chart by helm, readiness decided by the kubelet's own probes, and graceful
deletion with containers that really keep running through their grace period.

Every other e2e test runs its pods on kwok nodes, where Ready is a status patch. Here pods run
in containerd (runc, cgroups, network namespaces); this machine reaches their addresses on the
node's bridge, so a test toggles a pod's readiness endpoint over HTTP and the kubelet's probe,
not the test, changes the pod's Ready condition.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcd_registrar.etcd import Etcd, EtcdConfig
from tests.e2e.test_chart import CHART, helm_binary
from tests.harness import Cluster, KubectlError, PodInfo, deployment_manifest, wait_for
from tests.operator_process import OperatorProcess, registry_keys
from tests.realnode import DEMO_PORT, RealNode, demo_request

pytestmark = pytest.mark.realnode

CRD = "customresourcedefinition/serviceregistrations.etcd-registrar.io"
OPT_IN = {"etcd-registrar.io/service": "goods", "etcd-registrar.io/port": "http"}


def keys_of(pods: list[PodInfo], prefix: str) -> dict[str, str]:
    return {f"{prefix}/goods/{p.name}": f"{p.ip}:{DEMO_PORT}" for p in pods}


def serving_on_the_node(
    cluster: Cluster, node: RealNode, namespace: str, replicas: int
) -> list[PodInfo]:
    """The goods pods once `replicas` of them are Ready, all on the real node with addresses
    on its bridge that answer from this machine."""
    pods = cluster.wait_deployment_serving(namespace, "goods", replicas, timeout=120)
    for pod in pods:
        assert pod.node == node.name, pod
        assert pod.ip and pod.ip in {str(a) for a in node.pod_subnet.hosts()}, pod
        assert demo_request(pod.ip, "/") == 200, f"{pod.name} at {pod.ip} does not answer"
    return pods


def registry_becomes(endpoints: str, prefix: str, want: dict[str, str], message: str) -> None:
    wait_for(lambda: registry_keys(endpoints, f"{prefix}/") == want, 30, message=message)


def registry_revision(endpoints: str, prefix: str) -> int:
    """etcd's revision now (read with the keys under `prefix`)."""

    async def read() -> int:
        etcd = Etcd(EtcdConfig(endpoints=tuple(endpoints.split(","))))
        try:
            _, revision = await etcd.get_prefix(prefix, keys_only=True)
            return revision
        finally:
            await etcd.close()

    return asyncio.run(read())


def deletes_since(endpoints: str, prefix: str, revision: int) -> list[str]:
    """Keys under `prefix` deleted since `revision`, from etcd's own history: a watch from that
    revision, read up to a marker key written now (so nothing in between can be missed)."""
    marker = f"{prefix}~end-of-history"

    async def read() -> list[str]:
        etcd = Etcd(EtcdConfig(endpoints=tuple(endpoints.split(","))))
        try:
            await etcd.put(marker, "")
            deleted = []
            async for event in etcd.watch_prefix(prefix, revision):
                if event.key == marker:
                    break
                if event.kind == "DELETE":
                    deleted.append(event.key)
            await etcd.delete(marker)
            return deleted
        finally:
            await etcd.close()

    return asyncio.run(read())


# --------------------------------------------------------------------------- the chart


@pytest.fixture
def release(cluster: Cluster, namespace: str, crd: None) -> Iterator[str]:
    """`helm` against the cluster, with the shared CRD adopted into this test's release (the
    way values.yaml tells users to), so the chart manages it as on a fresh cluster. Named
    after the namespace: the chart's ClusterRoles are named after the release."""
    name = f"rn-{namespace.rsplit('-', 1)[-1]}"
    cluster.kubectl("label", "--overwrite", CRD, "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl(
        "annotate",
        "--overwrite",
        CRD,
        f"meta.helm.sh/release-name={name}",
        f"meta.helm.sh/release-namespace={namespace}",
    )
    yield name
    helm(cluster, "uninstall", name, "-n", namespace, "--ignore-not-found", check=False)


def helm(cluster: Cluster, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [helm_binary(), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


def operator_pods(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    """The release's operator pods that are not terminating, by name."""
    pods = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator")
    return {
        p["metadata"]["name"]: p
        for p in pods["items"]
        if not p["metadata"].get("deletionTimestamp")
    }


def ready_by_its_probes(pod: dict[str, Any]) -> bool:
    """Ready as the kubelet reports it: the container started and passed its probe."""
    statuses = pod["status"].get("containerStatuses") or []
    return bool(statuses) and all(s["ready"] and "running" in s["state"] for s in statuses)


def test_chart_runs_the_image_on_the_real_node(
    cluster: Cluster, namespace: str, real_node: RealNode, release: str, tmp_path: Path
) -> None:
    """helm install with the chart's defaults (its replicas, read-only root, UID 65532, no
    capabilities) into a namespace that enforces Pod Security "restricted": the operator pods
    become Ready through their own probes, doctor passes inside a pod and as `helm test`, they
    register a pod, an upgrade rolls them without a single DELETE in the registry, one that
    adds a namespace hands over to the new configuration, and uninstall leaves the CRD."""
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    prefix = f"/realnode-{namespace}"
    repository, tag = real_node.operator_image.rsplit(":", 1)
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "etcd": {"endpoints": [real_node.registry_etcd_for_pods]},
        "watchNamespaces": [namespace],
        "prefix": prefix,
        **real_node.placement(),
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    chart = [str(CHART), "-n", namespace, "--wait", "--timeout=180s"]
    helm(cluster, "install", release, *chart, "-f", str(values_file))

    deploy = f"deploy/{release}-etcd-registrar"
    replicas = cluster.get_json(deploy, "-n", namespace)["spec"]["replicas"]  # the chart's: HA
    pods = operator_pods(cluster, namespace)
    assert len(pods) == replicas, list(pods)
    for pod in pods.values():
        assert pod["spec"]["nodeName"] == real_node.name
        assert ready_by_its_probes(pod), pod["status"]

    def in_pod(*command: str) -> str:
        return cluster.kubectl("exec", "-n", namespace, deploy, "--", *command)

    # What the process really runs with, from the kernel: UID/GID 65532, no capabilities at
    # all, and a root filesystem that refuses writes (only /tmp, an emptyDir, is writable).
    status = dict(
        line.split(":\t", 1)
        for line in in_pod("cat", "/proc/1/status").splitlines()
        if ":\t" in line
    )
    assert status["Uid"].split() == ["65532"] * 4, status["Uid"]
    assert status["Gid"].split() == ["65532"] * 4, status["Gid"]
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
    with pytest.raises(KubectlError, match="Read-only file system"):
        in_pod("touch", "/opt/venv/written")
    in_pod("touch", "/tmp/written")  # noqa: S108 (a path inside the pod)

    doctor = in_pod("etcd-registrar", "doctor")  # KubectlError on a non-zero exit
    assert doctor.splitlines()[-1] == "all checks passed", doctor
    # `helm test`: the same doctor in a hook pod of its own, with the operator's rights
    tested = helm(cluster, "test", release, "-n", namespace, "--timeout=120s")
    assert re.search(r"Phase:\s+Succeeded", tested), tested

    cluster.create_deployment(namespace, real_node.demo_deployment("goods", 1, OPT_IN))
    goods = serving_on_the_node(cluster, real_node, namespace, 1)
    etcd = cluster.etcd_endpoints
    registry_becomes(etcd, prefix, keys_of(goods, prefix), "registered by the operator pods")

    revision = registry_revision(etcd, prefix)
    helm(cluster, "upgrade", release, *chart, "--reuse-values", "--set", "logFormat=json")
    new_pods = operator_pods(cluster, namespace)
    assert len(new_pods) == replicas and not new_pods.keys() & pods.keys(), list(new_pods)

    def last_log_line(name: str) -> Any:
        return json.loads(cluster.kubectl("logs", "-n", namespace, name).splitlines()[-1])

    for name, pod in new_pods.items():
        assert ready_by_its_probes(pod), pod["status"]
        wait_for(partial(last_log_line, name), 30, message=f"{name} logs JSON (the new value)")
    registry_becomes(etcd, prefix, keys_of(goods, prefix), "still registered after the upgrade")
    assert deletes_since(etcd, f"{prefix}/", revision + 1) == [], "the upgrade emptied keys"

    # An upgrade that adds a namespace is a new configuration (R2-3): its replicas stand by
    # ready beside the old leader, one leads once the old ones go, the added namespace's pods
    # are registered, and no key is deleted on the way.
    added = cluster.create_namespace("added")
    try:
        opt_in = {"etcd-registrar.io/service": "extra"}
        cluster.create_deployment(added, deployment_manifest("extra", 1, annotations=opt_in))
        (extra,) = cluster.wait_deployment_serving(added, "extra", 1)
        revision = registry_revision(etcd, prefix)
        scope = f"watchNamespaces={{{namespace},{added}}}"
        helm(cluster, "upgrade", release, *chart, "--reuse-values", "--set", scope)
        want = keys_of(goods, prefix) | {f"{prefix}/extra/{extra.name}": f"{extra.ip}:80"}
        registry_becomes(etcd, prefix, want, "the added namespace registered by the new config")
        assert deletes_since(etcd, f"{prefix}/", revision + 1) == [], "the handover deleted keys"
    finally:
        cluster.delete_namespace(added)

    helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout=120s")
    cluster.kubectl("get", CRD)  # kept (helm.sh/resource-policy: keep)
    wait_for(lambda: not operator_pods(cluster, namespace), 60, message="operator pods gone")


# --------------------------------------------------------------------------- real probes


@pytest.fixture
def operator(cluster: Cluster, namespace: str, crd: None) -> Iterator[str]:
    """The operator (on this machine, scoped to the test namespace); yields its key prefix."""
    prefix = f"/realnode-{namespace}"
    process = OperatorProcess(cluster, namespace, "--default-prefix", prefix).start()
    try:
        yield prefix
    finally:
        process.stop()


def test_goods_follows_the_kubelets_readiness_probes(
    cluster: Cluster, namespace: str, real_node: RealNode, operator: str
) -> None:
    """The goods scenario with real probes: keys follow scale 3 -> 4 -> 3, and switching one
    pod's readiness endpoint off and on removes and restores its key through the kubelet."""
    prefix, etcd = operator, cluster.etcd_endpoints
    cluster.create_deployment(namespace, real_node.demo_deployment("goods", 3, OPT_IN))
    for replicas in (3, 4, 3):
        cluster.scale(namespace, "goods", replicas)
        pods = serving_on_the_node(cluster, real_node, namespace, replicas)
        registry_becomes(etcd, prefix, keys_of(pods, prefix), f"{replicas} keys")

    pod, others = pods[0], pods[1:]
    assert pod.ip
    assert demo_request(pod.ip, "/ready/off", "POST") == 200
    wait_for(
        lambda: not cluster.get_pod(namespace, pod.name).ready,
        20,
        message="the kubelet's probe marks the pod not ready",
    )
    registry_becomes(etcd, prefix, keys_of(others, prefix), "key removed on readiness loss")
    assert demo_request(pod.ip, "/") == 200  # the app still runs: only readiness changed

    assert demo_request(pod.ip, "/ready/on", "POST") == 200
    wait_for(
        lambda: cluster.get_pod(namespace, pod.name).ready,
        20,
        message="the kubelet's probe marks the pod ready again",
    )
    registry_becomes(etcd, prefix, keys_of(pods, prefix), "key restored")


def test_graceful_deletion_deregisters_while_the_container_serves(
    cluster: Cluster, namespace: str, real_node: RealNode, operator: str
) -> None:
    """A pod deleted with a long grace period and a preStop sleep loses its key as soon as it
    is terminating, while its container still serves; the gap between the two is measured."""
    prefix, etcd = operator, cluster.etcd_endpoints
    pre_stop = 8
    manifest = real_node.demo_deployment("goods", 1, OPT_IN, terminationGracePeriodSeconds=60)
    manifest["spec"]["template"]["spec"]["containers"][0]["lifecycle"] = {
        "preStop": {"exec": {"command": ["sleep", str(pre_stop)]}}
    }
    cluster.create_deployment(namespace, manifest)
    (pod,) = serving_on_the_node(cluster, real_node, namespace, 1)
    ip = pod.ip
    assert ip
    key = f"{prefix}/goods/{pod.name}"
    registry_becomes(etcd, prefix, keys_of([pod], prefix), "registered")

    deleted_at = time.monotonic()
    cluster.kubectl("delete", "pod", "-n", namespace, pod.name, "--wait=false")
    wait_for(lambda: key not in registry_keys(etcd, f"{prefix}/"), 10, message="key deleted")
    key_gone = time.monotonic()
    assert cluster.get_pod(namespace, pod.name).terminating
    assert demo_request(ip, "/") == 200, "the container stopped before its key was gone"

    wait_for(lambda: demo_request(ip, "/") == 0, pre_stop + 30, message="container stops")
    stopped = time.monotonic()
    served = stopped - key_gone
    print(
        f"\ngraceful deletion: key deleted {(key_gone - deleted_at) * 1000:.0f} ms after the "
        f"delete request; the container served {served:.1f} s more (preStop sleep {pre_stop} s)",
        file=sys.stderr,
    )
    assert served > pre_stop / 2, "the key should go at deletionTimestamp, not at container stop"
