"""High availability on the local cluster (issue #13): two operators of one owner id, a
consumer's watch on the registry. No failover, upgrade or frozen leader ever shows the
consumer a DELETE of a ready pod's key, and exactly one replica writes."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator

import pytest

from etcd_registrar.candidacy import Candidate
from etcd_registrar.etcd import Etcd, EtcdConfig
from etcd_registrar.leases import lease_records, owner_keys
from tests.e2e.test_operations import probe
from tests.e2e.test_registrar import registration
from tests.harness import Cluster, assert_stays, deployment_manifest, wait_for
from tests.operator_process import ConsumerWatch, OperatorProcess, delete_key, registry_keys

pytestmark = pytest.mark.e2e

TTL = 3  # the registration's lease TTL: the gaps below last 4 of them


@pytest.fixture
def pair(cluster: Cluster, namespace: str, crd: None) -> Iterator[list[OperatorProcess]]:
    """Two replicas of one installation (same owner id, same scope), the first leading."""
    first = OperatorProcess(cluster, namespace, "--resync", "2s").start()
    wait_for(lambda: leader_pid(cluster, namespace) == first.pid, 20, message="first leads")
    second = OperatorProcess(cluster, namespace, "--resync", "2s").start()
    replicas = [first, second]
    yield replicas
    for proc in replicas:
        proc.stop()


def leader_pid(cluster: Cluster, namespace: str) -> int | None:
    key = f"/etcd-registrar/{namespace}/leader"
    value = registry_keys(cluster.etcd_endpoints, key).get(key)
    return int(json.loads(value)["id"].rsplit("/", 1)[1]) if value else None


def goods(cluster: Cluster, namespace: str, replicas: int = 3) -> str:
    prefix = f"/ha-{namespace}"
    cluster.apply(registration("goods", prefix=prefix, ttl=TTL), namespace)
    opt_in = {"etcd-registrar.io/service": "goods"}
    cluster.create_deployment(namespace, deployment_manifest("goods", replicas, annotations=opt_in))
    cluster.wait_deployment_serving(namespace, "goods", replicas)
    return prefix + "/goods/"


def serving_keys(cluster: Cluster, namespace: str, prefix: str) -> set[str]:
    return {prefix + p.name for p in cluster.pods_of_deployment(namespace, "goods") if p.serving}


def follows(cluster: Cluster, namespace: str, prefix: str) -> bool:
    keys = set(registry_keys(cluster.etcd_endpoints, prefix))
    return keys == serving_keys(cluster, namespace, prefix)


@pytest.mark.parametrize("victim", ["leader", "standby"])
def test_a_replica_killed_for_four_ttls_empties_nothing(
    cluster: Cluster, namespace: str, pair: list[OperatorProcess], victim: str
) -> None:
    prefix = goods(cluster, namespace)
    wait_for(lambda: follows(cluster, namespace, prefix), 30, message="registered")
    leader, standby = pair
    killed, survivor = (leader, standby) if victim == "leader" else (standby, leader)
    with ConsumerWatch(cluster.etcd_endpoints, prefix) as consumer:
        killed.kill()
        cluster.scale(namespace, "goods", 4)  # a change made during the gap
        time.sleep(4 * TTL)  # the gap: every registry lease would have expired thrice
        wait_for(lambda: follows(cluster, namespace, prefix), 30, message="the change landed")
        assert any(e.kind == "PUT" for e in consumer.events)  # the watch sees the scale-up
        assert consumer.deletes() == [], "a consumer saw keys of ready pods go"
        assert leader_pid(cluster, namespace) == survivor.pid
    pair.remove(killed)


def test_a_rolling_upgrade_hands_over_without_a_delete(
    cluster: Cluster, namespace: str, pair: list[OperatorProcess]
) -> None:
    prefix = goods(cluster, namespace)
    wait_for(lambda: follows(cluster, namespace, prefix), 30, message="registered")
    old_leader = pair[0]
    with ConsumerWatch(cluster.etcd_endpoints, prefix) as consumer:
        pair.append(OperatorProcess(cluster, namespace, "--resync", "2s").start())  # surge
        started = time.monotonic()
        old_leader.stop()  # SIGTERM: resigns at once
        new = wait_for(lambda: leader_pid(cluster, namespace), 10, message="a new leader")
        handover = time.monotonic() - started
        assert new in {p.pid for p in pair[1:]}
        assert handover < 5, f"handover took {handover:.1f}s, the election lease lives 5s"
        cluster.scale(namespace, "goods", 2)
        wait_for(lambda: follows(cluster, namespace, prefix), 30, message="the new leader writes")
        gone = set(consumer.deletes())
        assert len(gone) == 1, gone  # only the pod scaled away, which no key stands for now
        assert not gone & set(registry_keys(cluster.etcd_endpoints, prefix))
    pair.remove(old_leader)


def test_a_frozen_leader_is_fenced_and_steps_down(
    cluster: Cluster, namespace: str, pair: list[OperatorProcess]
) -> None:
    """SIGSTOP the leader past its election lease: the standby takes over. SIGCONT: the old
    leader finds its leadership gone and steps down, saying why; never two writers."""
    prefix = goods(cluster, namespace)
    wait_for(lambda: follows(cluster, namespace, prefix), 30, message="registered")
    leader, standby = pair
    with ConsumerWatch(cluster.etcd_endpoints, prefix) as consumer:
        leader.signal(signal.SIGSTOP)
        wait_for(lambda: leader_pid(cluster, namespace) == standby.pid, 20, message="takeover")
        cluster.scale(namespace, "goods", 4)
        wait_for(lambda: follows(cluster, namespace, prefix), 30, message="the new leader writes")
        leader.signal(signal.SIGCONT)
        wait_for(lambda: "stepping down as leader" in leader.tail(200), 20, message="step down")
        assert leader_pid(cluster, namespace) == standby.pid
        cluster.scale(namespace, "goods", 3)
        wait_for(lambda: follows(cluster, namespace, prefix), 30, message="still followed")
        assert len(consumer.deletes()) == 1  # the scale-down, nothing else


def roll(cluster: Cluster, namespace: str, replicas: list[OperatorProcess], *flags: str) -> None:
    """A rolling upgrade to a configuration given by `flags`, as the chart's maxSurge 1 and
    maxUnavailable 0 make it: one new replica ready (start() waits for /readyz, so it must
    stand by healthy), then one old replica stopped, until none is left. A new replica
    leads within an election TTL of the last old one's exit."""
    for old in list(replicas):
        replicas.append(OperatorProcess(cluster, namespace, *flags).start())
        old.stop()
        exited = time.monotonic()
        replicas.remove(old)
    new = {p.pid for p in replicas}
    wait_for(lambda: leader_pid(cluster, namespace) in new, 5, message="a new replica leads")
    handover = time.monotonic() - exited
    assert handover < 5, f"no leader {handover:.1f}s after the old replicas went"


def test_a_rolling_upgrade_that_adds_a_namespace_hands_over(
    cluster: Cluster, namespace: str, crd: None
) -> None:
    """Review 2, R2-3, as a helm upgrade adding a namespace to watchNamespaces, then one
    taking it out again. Each new configuration (a higher --config-generation) stands by
    healthy, so the rollout proceeds, and leads once the old replicas are gone. The added
    namespace's pods get registered, and their keys deleted once it leaves the scope; no key
    of the namespace in both scopes is ever deleted."""
    added = cluster.create_namespace(f"{namespace}-added")
    replicas: list[OperatorProcess] = []
    try:
        first = ("--resync", "2s", "--config-generation", "1")
        wider = ("--resync", "2s", "--namespace", added, "--config-generation", "2")
        narrower = ("--resync", "2s", "--config-generation", "3")
        replicas.append(OperatorProcess(cluster, namespace, *first).start())
        wait_for(lambda: leader_pid(cluster, namespace) == replicas[0].pid, 20, message="leads")
        replicas.append(OperatorProcess(cluster, namespace, *first).start())
        prefix = goods(cluster, namespace)
        root = prefix.removesuffix("goods/")
        cluster.apply(registration("more", prefix=root.rstrip("/"), ttl=TTL), added)
        opt_in = {"etcd-registrar.io/service": "more"}
        cluster.create_deployment(added, deployment_manifest("more", 2, annotations=opt_in))
        more = cluster.wait_deployment_serving(added, "more", 2)
        wait_for(lambda: follows(cluster, namespace, prefix), 30, message="registered")

        def more_keys() -> set[str]:
            return set(registry_keys(cluster.etcd_endpoints, root + "more/"))

        assert not more_keys()  # not in scope yet
        expected = {f"{root}more/{pod.name}" for pod in more}
        with ConsumerWatch(cluster.etcd_endpoints, root) as consumer:
            roll(cluster, namespace, replicas, *wider)
            wait_for(lambda: more_keys() == expected, 30, message="the added pods registered")
            assert consumer.deletes() == [], "a consumer saw keys of ready pods go"

            roll(cluster, namespace, replicas, *narrower)
            wait_for(lambda: not more_keys(), 30, message="the keys out of scope deleted")
            assert follows(cluster, namespace, prefix)
            assert set(consumer.deletes()) == expected, "a key in both scopes was deleted"
    finally:
        for proc in replicas:
            proc.stop()
        cluster.delete_namespace(added)


FOREIGN = "uid-of-another-cluster"  # the other cluster's kube-system namespace UID


def leave_another_clusters_records(cluster: Cluster, owner: str, key: str) -> str:
    """What the operator of another cluster with the same owner id leaves in the registry
    etcd while it runs: its leader key, a lease recorded with its cluster's identity, and
    `key` of one of its ready pods on that lease (60 s, outliving the test's checks).
    Returns the leader key."""

    async def write() -> str:
        etcd = Etcd(EtcdConfig(endpoints=tuple(cluster.etcd_endpoints.split(","))))
        try:
            lease = await etcd.grant(60)
            record = {"namespace": "shop", "service": "goods", "ttl": 60, "cluster": FOREIGN}
            await etcd.put(f"{lease_records(owner)}{lease:x}", json.dumps(record), lease)
            await etcd.put(key, "10.9.9.9:80", lease)
            leader = f"{owner_keys(owner)}leader"
            candidate = Candidate("their-operator/1", cluster=FOREIGN)
            await etcd.put(leader, candidate.value(), lease)
            return leader
        finally:
            await etcd.close()

    return asyncio.run(write())


def test_an_operator_of_a_second_cluster_with_the_same_owner_id_stands_aside(
    cluster: Cluster, namespace: str, crd: None
) -> None:
    """Review 2, R2-4, with the real operator: another cluster runs an operator with this
    owner id. This one learns its own cluster's identity from the API server, refuses loudly
    (/readyz names the other cluster), and neither leads nor touches the other's keys, even
    while the other has no leader key. Once the other cluster's records are gone, it leads."""
    prefix = goods(cluster, namespace)
    theirs = f"{prefix}pod-of-the-other-cluster"
    leader = leave_another_clusters_records(cluster, namespace, theirs)
    operator = OperatorProcess(cluster, namespace, "--resync", "2s").start(wait=False)
    try:

        def refusal() -> str | None:
            answer = probe(operator.health_port, "/readyz")
            return answer[1] if answer and answer[0] == 503 and FOREIGN in answer[1] else None

        assert "--owner-id" in wait_for(refusal, 60, message="refused, naming the other")
        delete_key(cluster.etcd_endpoints, leader)  # their leader is gone; their lease lives

        def untouched() -> bool:
            keys = registry_keys(cluster.etcd_endpoints, prefix)
            held = registry_keys(cluster.etcd_endpoints, leader)
            return keys == {theirs: "10.9.9.9:80"} and not held

        assert_stays(untouched, 12, message="the operator led or touched the other's keys")
        assert refusal(), operator.tail()
        assert "uid-of-another-cluster" in operator.tail(200)  # logged, naming it

        delete_key(cluster.etcd_endpoints, theirs)
        for record in registry_keys(cluster.etcd_endpoints, lease_records(namespace)):
            delete_key(cluster.etcd_endpoints, record)  # the other cluster is gone for good
        wait_for(lambda: follows(cluster, namespace, prefix), 30, message="it leads then")
        assert operator.ready()
    finally:
        operator.stop()
