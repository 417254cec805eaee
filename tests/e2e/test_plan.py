"""`etcd-registrar plan` against the local cluster and its registry etcd: it prints what
`run` would write, diffed against etcd, and writes nothing (to etcd or the API server)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from etcd_registrar.etcd import Etcd, EtcdConfig
from tests.e2e.test_registrar import goods, registration
from tests.harness import Cluster, wait_for
from tests.operator_process import OperatorProcess, registry_keys

pytestmark = pytest.mark.e2e


def plan(cluster: Cluster, namespace: str) -> list[str]:
    command = [sys.executable, "-m", "etcd_registrar", "plan", "--namespace", namespace]
    result = subprocess.run(
        [*command, "--owner-id", namespace],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def put(endpoints: str, key: str, value: str) -> None:
    """A self-registering instance's write: no lease of the operator's."""

    async def write() -> None:
        etcd = Etcd(EtcdConfig(endpoints=tuple(endpoints.split(","))))
        try:
            await etcd.put(key, value)
        finally:
            await etcd.close()

    asyncio.run(write())


def test_plan_shows_the_puts_and_the_keys_another_writer_holds_and_writes_nothing(
    cluster: Cluster, namespace: str, prefix: str, crd: None
) -> None:
    """Migrating from self-registration: one instance's key is there already, written by
    itself; the operator would leave it alone and put the other two."""
    pods = [p for p in goods(cluster, namespace, prefix) if p.serving]
    mine = f"{prefix}/goods/{pods[0].name}"
    put(cluster.etcd_endpoints, mine, f"{pods[0].ip}:80")

    def ours() -> dict[str, str]:  # the service's keys and this owner id's bookkeeping
        owner = registry_keys(cluster.etcd_endpoints, f"/etcd-registrar/{namespace}/")
        return registry_keys(cluster.etcd_endpoints, f"{prefix}/") | owner

    before = ours()
    assert before == {mine: f"{pods[0].ip}:80"}

    lines = plan(cluster, namespace)

    assert lines == [
        *sorted(f"+ {prefix}/goods/{p.name} {p.ip}:80" for p in pods[1:]),
        f"! {mine}: held by another writer, not overwritten",
        "2 to put, 0 to change, 0 to delete, 1 not written",
    ]
    assert ours() == before  # nothing written: no keys, no lease records, no claims
    status = cluster.get_json("sreg", "goods", "-n", namespace).get("status")
    assert not status, f"plan patched the registration's status: {status}"


def test_plan_shows_changes_and_deletes_of_the_keys_the_operator_holds(
    cluster: Cluster, namespace: str, prefix: str, crd: None
) -> None:
    """The operator held three keys and stopped (they stay on their 120 s leases); the
    registration changed format and the deployment shrank meanwhile."""
    pods = goods(cluster, namespace, prefix)
    cluster.apply(registration("goods", prefix=prefix, ttl=120, format="address"), namespace)
    held = {f"{prefix}/goods/{p.name}": f"{p.ip}:80" for p in pods if p.serving}
    assert len(held) == 3
    operator = OperatorProcess(cluster, namespace).start()
    try:
        wait_for(
            lambda: registry_keys(cluster.etcd_endpoints, f"{prefix}/goods/") == held,
            30,
            message="the operator holds the three keys",
        )
    finally:
        operator.stop()
    assert registry_keys(cluster.etcd_endpoints, f"{prefix}/goods/") == held
    cluster.kubectl(
        "patch", "sreg", "goods", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"format": "json"}}),
    )  # fmt: skip
    cluster.scale(namespace, "goods", 2)
    kept = {p.name for p in cluster.wait_deployment_serving(namespace, "goods", 2)}

    lines = plan(cluster, namespace)

    changed = [line for line in lines if line.startswith("~ ")]
    assert sorted(line.split()[1] for line in changed) == sorted(
        f"{prefix}/goods/{name}" for name in kept
    )
    for line in changed:  # the json format's value, "now" the address one
        key, value = line.split()[1], line.split(" ", 2)[2].rsplit(" (now ", 1)[0]
        assert json.loads(value)["service"] == "goods", line
        assert line.endswith(f"(now {held[key]})"), line
    [deleted] = [line for line in lines if line.startswith("- ")]
    assert deleted.split()[1] not in {f"{prefix}/goods/{name}" for name in kept}
    assert lines[-1] == "0 to put, 2 to change, 1 to delete, 0 not written"
    assert registry_keys(cluster.etcd_endpoints, f"{prefix}/goods/") == held
