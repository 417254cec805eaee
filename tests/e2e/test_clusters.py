"""Two clusters, one registry etcd (#20 items 2 and 3, guarantee 10), with two real local
clusters: a second API server, its etcd and kwok beside the first (hack/cluster-up.sh with
ETCD_REGISTRAR_CLUSTER_DIR), its operator writing to the first cluster's registry etcd.

One owner id in both: the second cluster's operator is refused loudly and deletes nothing of
the first's, even once the first's operator is killed. Their own owner ids: both clusters'
pods are registered (namespace sameness: one service), a kill -9 of either leader deletes
nothing of the other's, and another namespace of the second cluster is kept out of the
range a namespace of the first claimed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.e2e.test_operations import probe
from tests.harness import Cluster, assert_stays, deployment_manifest, wait_for
from tests.operator_process import CRD_FILE, OperatorProcess, registry_keys

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster_b(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The second cluster; its operators write to the first cluster's registry etcd."""
    with Cluster.another(tmp_path_factory.mktemp("cluster-b")) as other:
        other.kubectl("apply", "-f", str(CRD_FILE))
        yield Cluster(other.kubeconfig, cluster.etcd_endpoints)


def deploy(cluster: Cluster, namespace: str, service: str, replicas: int = 2) -> set[str]:
    """Annotated pods of `service` in `namespace`: the names of those serving."""
    opt_in = {"etcd-registrar.io/service": service}
    cluster.create_deployment(namespace, deployment_manifest("goods", replicas, annotations=opt_in))
    return {p.name for p in cluster.wait_deployment_serving(namespace, "goods", replicas)}


def held(cluster: Cluster, prefix: str) -> dict[str, str]:
    return registry_keys(cluster.etcd_endpoints, prefix)


@pytest.fixture
def same_namespace(cluster_b: Cluster, namespace: str) -> Iterator[str]:
    """The test's namespace, in the second cluster too: the same tenant there."""
    cluster_b.kubectl("create", "namespace", namespace)
    yield namespace
    cluster_b.delete_namespace(namespace)


def test_one_owner_id_in_two_clusters_is_refused_by_the_second(
    cluster: Cluster, cluster_b: Cluster, same_namespace: str, crd: None
) -> None:
    namespace, service = same_namespace, f"goods-{secrets.token_hex(3)}"
    prefix = f"/services/{service}/"
    ours = deploy(cluster, namespace, service)
    deploy(cluster_b, namespace, service)
    a = OperatorProcess(cluster, namespace, "--resync", "2s").start()
    b = OperatorProcess(cluster_b, namespace, "--resync", "2s").start(wait=False)
    try:
        wait_for(lambda: set(held(cluster, prefix)) == {prefix + n for n in ours}, 30,
                 message="the first cluster's pods registered")  # fmt: skip

        first = cluster.get_json("namespace", "kube-system")["metadata"]["uid"]

        def refused() -> str | None:  # naming the first cluster
            answer = probe(b.health_port, "/readyz")
            return answer[1] if answer and answer[0] == 503 and first in answer[1] else None

        wait_for(refused, 60, message="the second cluster refused, loudly")
        before = held(cluster, prefix)
        a.kill()  # no replica of the first cluster lives: its keys wait for their TTL (10 s)
        assert_stays(lambda: held(cluster, prefix) == before, 6,
                     message="the second cluster deleted or added keys")  # fmt: skip
        assert refused(), b.tail()
    finally:
        a.stop()
        b.stop()


def test_two_clusters_with_their_own_owner_ids_share_one_registry(
    cluster: Cluster, cluster_b: Cluster, same_namespace: str, crd: None
) -> None:
    namespace, service = same_namespace, f"goods-{secrets.token_hex(3)}"
    prefix = f"/services/{service}/"
    ours, theirs = deploy(cluster, namespace, service), deploy(cluster_b, namespace, service)
    a = OperatorProcess(cluster, namespace, "--resync", "2s", "--owner-id", f"a-{namespace}")
    b = OperatorProcess(cluster_b, namespace, "--resync", "2s", "--owner-id", f"b-{namespace}")
    intruder = cluster_b.create_namespace("intruder")
    b_intruder = OperatorProcess(
        cluster_b, intruder, "--resync", "2s", "--owner-id", f"b2-{namespace}"
    )
    try:
        a.start(), b.start()
        both = {prefix + n for n in ours | theirs}  # one tenant, one service
        wait_for(lambda: set(held(cluster, prefix)) == both, 30, message="both registered")

        # another namespace of the second cluster: kept out of the range, told by whom
        b_intruder.start()
        deploy(cluster_b, intruder, service, replicas=1)

        def warned() -> str | None:
            events = cluster_b.get_json("events", "-n", intruder)["items"]
            texts = [e["message"] for e in events if e.get("reason") == "InvalidRegistration"]
            return next((t for t in texts if f"owner id a-{namespace}" in t), None)

        assert f"belong to namespace {namespace}" in wait_for(warned, 30, message="a Warning")
        assert set(held(cluster, prefix)) == both

        # kill -9 of the second cluster's leader: the first's keys are untouched
        before = {k: v for k, v in held(cluster, prefix).items() if k[len(prefix) :] in ours}
        b.kill()
        assert_stays(
            lambda: {k: v for k, v in held(cluster, prefix).items() if k in before} == before,
            6,
            message="the first cluster's keys changed when the second's operator died",
        )
    finally:
        for operator in (a, b, b_intruder):
            operator.stop()
        cluster_b.delete_namespace(intruder)
