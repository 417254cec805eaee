"""Tenancy on the local cluster (issue #11): a namespace cannot join another's service,
by annotation or by a selector registration; the owner can share; ownership holds while an
intruder comes and goes, and the owner's keys never flap."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from etcd_registrar.etcd import Etcd, EtcdConfig
from tests.e2e.test_registrar import registration
from tests.harness import Cluster, assert_stays, deployment_manifest, wait_for
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def intruder(cluster: Cluster) -> Iterator[str]:
    name = cluster.create_namespace("team-a")
    yield name
    cluster.delete_namespace(name)


def revisions(cluster: Cluster, prefix: str) -> dict[str, int]:
    """key -> mod revision under `prefix`: an unchanged map means no key was rewritten."""
    import asyncio

    async def read() -> dict[str, int]:
        etcd = Etcd(EtcdConfig(endpoints=tuple(cluster.etcd_endpoints.split(","))))
        try:
            return {kv.key: kv.mod_revision for kv in (await etcd.get_prefix(prefix))[0]}
        finally:
            await etcd.close()

    return asyncio.run(read())


def test_a_namespace_cannot_join_another_namespaces_service(
    cluster: Cluster, namespace: str, intruder: str, crd: None
) -> None:
    owner, service = namespace, f"payments-{secrets.token_hex(3)}"
    keys = f"/services/{service}/"
    opt_in = {"etcd-registrar.io/service": service}
    cluster.create_deployment(owner, deployment_manifest("payments", 2, annotations=opt_in))
    owned = cluster.wait_deployment_serving(owner, "payments", 2)
    operator = OperatorProcess(cluster, owner, "--namespace", intruder, "--resync", "2s").start()
    try:
        wait_for(lambda: len(revisions(cluster, keys)) == 2, 30, message="the owner registered")
        before = revisions(cluster, keys)
        assert set(before) == {keys + p.name for p in owned}

        # by annotation, and by a selector registration copying the victim's layout
        cluster.create_deployment(intruder, deployment_manifest("sneaky", 2, annotations=opt_in))
        cluster.apply(
            registration("steal", service=service, selector={"matchLabels": {"app": "sneaky"}}),
            intruder,
        )
        cluster.wait_deployment_serving(intruder, "sneaky", 2)

        def refused() -> str | None:
            events = cluster.get_json("events", "-n", intruder)["items"]
            texts = [e["message"] for e in events if e.get("reason") == "InvalidRegistration"]
            return next((t for t in texts if f"belong to namespace {owner}" in t), None)

        assert "spec.shareWith" in wait_for(refused, 30, message="a Warning on the intruder")

        def conflict() -> str | None:
            status = cluster.get_json("sreg", "steal", "-n", intruder).get("status") or {}
            found = [c for c in status.get("conditions") or [] if c["type"] == "Conflict"]
            return found[0]["message"] if found and found[0]["status"] == "True" else None

        assert owner in wait_for(conflict, 30, message="a Conflict condition on the intruder")
        # the owner's keys untouched throughout, the intruder's pods never in the range
        assert_stays(lambda: revisions(cluster, keys) == before, 5, message="owner's keys kept")

        # the intruder goes and comes back: still refused, nothing flaps
        cluster.kubectl("delete", "sreg", "steal", "-n", intruder)
        cluster.scale(intruder, "sneaky", 0)
        cluster.scale(intruder, "sneaky", 2)
        cluster.wait_deployment_serving(intruder, "sneaky", 2)
        assert_stays(lambda: revisions(cluster, keys) == before, 5, message="no flap")

        # sharing, by the owner's choice only
        cluster.apply(registration("payments", service=service, shareWith=[intruder]), owner)

        def shared() -> bool:
            pods = cluster.pods_of_deployment(intruder, "sneaky")
            held = revisions(cluster, keys)
            return {keys + p.name for p in pods if p.serving} <= set(held) and set(before) <= set(
                held
            )

        wait_for(shared, 30, message="the shared namespace's pods registered")
        assert {k: v for k, v in revisions(cluster, keys).items() if k in before} == before
    finally:
        operator.stop()


def bare_pod(name: str, labels: dict[str, str]) -> dict[str, object]:
    """A pod whose name the tenant picks: the handle of a key template with {pod} first."""
    pod = deployment_manifest(name, labels=labels)["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**pod["metadata"], "name": name},
        "spec": pod["spec"],
    }


@pytest.mark.parametrize("attack", ["pod-first-template", "dotted-coredns-name"])
def test_a_namespace_cannot_nest_into_another_namespaces_range(
    cluster: Cluster, namespace: str, intruder: str, crd: None, attack: str
) -> None:
    """Review 2, R2-1 and R2-2: identities are ranges. An intruder's key template with the
    pod name first, or a dotted coredns name, would put its pod's key inside the owner's
    range; it gets none there, and a Warning and a Conflict that name both ranges."""
    owner, service = namespace, f"goods-{secrets.token_hex(3)}"
    coredns = attack == "dotted-coredns-name"
    extra = ("--default-format", "coredns") if coredns else ()
    victim = f"/skydns/local/skydns/{service}/" if coredns else f"/services/{service}/"
    cluster.create_deployment(
        owner, deployment_manifest("goods", 2, annotations={"etcd-registrar.io/service": service})
    )
    owned = cluster.wait_deployment_serving(owner, "goods", 2)
    operator = OperatorProcess(
        cluster, owner, "--namespace", intruder, "--resync", "2s", *extra
    ).start()
    try:
        wait_for(lambda: len(revisions(cluster, victim)) == 2, 30, message="the owner registered")
        before = revisions(cluster, victim)
        assert set(before) == {victim + p.name for p in owned}
        if coredns:
            opt_in = {"etcd-registrar.io/service": f"x.{service}"}
            cluster.create_deployment(
                intruder, deployment_manifest("sneaky", 1, annotations=opt_in)
            )
        else:
            cluster.apply(
                registration(
                    "sneaky",
                    key="{prefix}/{pod}/{uid}",
                    selector={"matchLabels": {"app": "sneaky"}},
                ),
                intruder,
            )
            cluster.apply(bare_pod(service, {"app": "sneaky"}), intruder)

        def refused() -> str | None:
            events = cluster.get_json("events", "-n", intruder)["items"]
            texts = [e["message"] for e in events if e.get("reason") == "InvalidRegistration"]
            return next((t for t in texts if f"overlap the range {victim}" in t), None)

        assert f"namespace {owner}" in wait_for(refused, 30, message="a Warning on the intruder")
        if not coredns:

            def conflict() -> str | None:
                status = cluster.get_json("sreg", "sneaky", "-n", intruder).get("status") or {}
                found = [c for c in status.get("conditions") or [] if c["type"] == "Conflict"]
                ok = found and found[0]["status"] == "True" and found[0]["reason"] == "NotOwner"
                return found[0]["message"] if ok else None

            assert victim in wait_for(conflict, 30, message="a Conflict on the registration")
        assert_stays(lambda: revisions(cluster, victim) == before, 5, message="no key added")
    finally:
        operator.stop()


def test_an_administrator_takes_a_squatted_service_back_with_an_annotation(
    cluster: Cluster, namespace: str, intruder: str, crd: None
) -> None:
    """R2-6: a squatter's registration with no pods holds a name; one `kubectl annotate` of
    the rightful team's Namespace moves it, with no etcd surgery."""
    team, squatter, service = namespace, intruder, f"pay-{secrets.token_hex(3)}"
    keys = f"/services/{service}/"
    operator = OperatorProcess(cluster, team, "--namespace", squatter, "--resync", "2s").start()
    try:
        cluster.apply(registration("squat", service=service), squatter)

        def squatted() -> bool:
            status = cluster.get_json("sreg", "squat", "-n", squatter).get("status") or {}
            return status.get("endpoints") == 0

        wait_for(squatted, 30, message="the squatter's claim stands")
        opt_in = {"etcd-registrar.io/service": service}
        cluster.create_deployment(team, deployment_manifest("pay", 2, annotations=opt_in))
        pods = cluster.wait_deployment_serving(team, "pay", 2)
        assert_stays(lambda: revisions(cluster, keys) == {}, 3, message="the team is refused")

        cluster.kubectl("annotate", "namespace", team, f"etcd-registrar.io/claims={service}")
        wanted = {keys + p.name for p in pods}
        wait_for(lambda: set(revisions(cluster, keys)) == wanted, 30, message="team registered")

        def not_owner() -> str | None:
            status = cluster.get_json("sreg", "squat", "-n", squatter).get("status") or {}
            found = [c for c in status.get("conditions") or [] if c["type"] == "Conflict"]
            ok = found and found[0]["status"] == "True" and found[0]["reason"] == "NotOwner"
            return found[0]["message"] if ok else None

        assert f"namespace {team}" in wait_for(not_owner, 30, message="the squatter refused")
    finally:
        operator.stop()
