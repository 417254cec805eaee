"""The controller's event path against a real etcd (no API server needed for pod events)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from etcd_registrar import desired as desired_module
from etcd_registrar.claimstore import ClaimStore, claim_record
from etcd_registrar.controller import Controller
from etcd_registrar.etcd import Etcd, EtcdConfig, Fence
from etcd_registrar.kube import Kube
from etcd_registrar.source import Defaults, Desired, PodView, RegistrationId, desired_for_pod
from etcd_registrar.term import Term
from tests import listeners
from tests.aio import eventually
from tests.harness import EtcdServer, no_api
from tests.unit.builders import opt_in, pod_body, registration_body

pytestmark = pytest.mark.integration


async def test_a_changed_value_under_the_same_key_is_rewritten(
    controller: Controller, etcd_server: EtcdServer
) -> None:
    """Same pod, same key, new IP: the key must follow at once, not at the next sweep."""
    reader = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
    try:
        for ip in ("10.0.0.5", "10.0.0.6"):
            outcome = controller.on_pod("MODIFIED", pod_body(ip=ip, annotations=opt_in("goods")))
            assert outcome.committed is not None
            await outcome.committed
            kvs, _ = await reader.get_prefix("/services/goods/")
            assert [(kv.key, kv.value) for kv in kvs] == [
                ("/services/goods/goods-abc", f"{ip}:8080")
            ]
    finally:
        await reader.close()


async def test_an_invalid_registration_blocks_its_service_instead_of_falling_back(
    controller: Controller, etcd_server: EtcdServer
) -> None:
    """Pods of a service whose only registration is invalid get no keys: not the defaults'."""
    bad = registration_body({"service": "goods", "format": "go-zero", "prefix": "/x"})
    controller.on_registration("ADDED", bad)
    refused = controller.state.registrations[RegistrationId("shop", "goods")]
    assert refused.error  # the spec is refused
    controller.on_pod("ADDED", pod_body(annotations=opt_in("goods")))
    assert controller.state.claims == {}
    status = controller.statuses.status_of(RegistrationId("shop", "goods"))
    assert status["conditions"][0]["status"] == "False"
    controller.on_registration("DELETED", bad)  # removing it hands the pods to the defaults
    assert set(controller.state.claims) == {"/services/goods/goods-abc"}


async def test_conflict_warnings_are_posted_once_per_pod_not_per_event(
    controller: Controller,
) -> None:
    """A key template without a per-pod field and N replicas used to post N²/2 Warnings
    during the initial list; now each losing pod is told once, until its state changes."""
    posted = listeners.posted(controller).notices
    controller.on_registration("ADDED", registration_body({"key": "{prefix}/{service}/leader"}))
    replicas = 60
    for n in range(replicas):
        pod = pod_body(
            name=f"goods-{n:02}", created=f"2024-01-01T00:{n:02}:00Z", annotations=opt_in()
        )
        posted += controller.on_pod(None, pod).now
    winner = pod_body(
        name="goods-00", created="2024-01-01T00:00:00Z", ip="10.0.0.9", annotations=opt_in()
    )
    again = controller.on_pod("MODIFIED", winner).now
    warnings = [n for n in posted + again if n.type == "Warning"]
    assert len(warnings) == replicas - 1  # one per loser, none for the re-sent winner
    assert {n.pod["metadata"]["name"] for n in warnings} == {
        f"goods-{n:02}" for n in range(1, replicas)
    }


async def test_a_conflict_a_registration_change_causes_is_posted(controller: Controller) -> None:
    """The pods exist first; then a key template without a per-pod field makes them clash.
    The Warning comes from the registration's re-plan, not from a pod event."""
    posted = listeners.posted(controller).notices
    for n in range(2):
        pod = pod_body(name=f"goods-{n}", created=f"2024-01-01T00:0{n}:00Z", annotations=opt_in())
        controller.on_pod(None, pod)
    assert posted == []
    controller.on_registration("ADDED", registration_body({"key": "{prefix}/{service}/leader"}))
    (warning,) = posted
    assert (warning.reason, warning.pod["metadata"]["name"]) == ("Conflict", "goods-1")


async def test_the_sweep_names_every_warning_whose_cause_holds(controller: Controller) -> None:
    """So that a Warning dropped earlier (its namespace's share of the queue full) is posted
    again while its cause remains, and only then (R2-7)."""
    reposted = listeners.posted(controller).reposted
    controller.on_registration("ADDED", registration_body({"key": "{prefix}/{service}/leader"}))
    for n in range(2):
        pod = pod_body(name=f"goods-{n}", created=f"2024-01-01T00:0{n}:00Z", annotations=opt_in())
        controller.on_pod(None, pod)
    bad = pod_body(name="bad", labels={"app": "bad"}, annotations=opt_in("bad", port="nope"))
    controller.on_pod(None, bad)
    await controller.sweep()
    assert sorted((n.reason, n.pod["metadata"]["name"]) for n in reposted[-1]) == [
        ("Conflict", "goods-1"),
        ("InvalidRegistration", "bad"),
    ]
    controller.on_pod("DELETED", bad)
    controller.on_pod("DELETED", pod_body(name="goods-0"))  # goods-1 holds the key alone
    await controller.sweep()
    assert reposted[-1] == []


class SmallRequests(EtcdServer):
    """An etcd that refuses requests over 2 KiB: a value the operator allows, etcd refuses."""

    def extra_args(self) -> list[str]:
        return ["--max-request-bytes=2048"]


async def test_refused_and_taken_keys_are_forgotten_with_the_pods_that_wanted_them() -> None:
    """R2-10: a tenant whose keys etcd refuses, rolling out often, must not grow the
    controller's memory with every pod name it ever had."""
    with SmallRequests() as server:
        server.start()
        config = EtcdConfig(endpoints=(server.endpoint,))
        controller = Controller(
            Etcd(config),
            Kube(no_api),
            Defaults(format="json"),
            Term.alone(),
            events=listeners.Posted(),
            claims=listeners.Claims(),
            etcd_check=listeners.Reachable(),
            owner="c",
        )
        registry, other = controller.registry, Etcd(config)
        await registry.start()
        try:
            await other.put("/services/goods/goods-taken", "another writer's")
            big = opt_in(metadata={"blob": "x" * 3000})  # under --max-value-bytes
            for name, annotations in (("goods-big", big), ("goods-taken", opt_in())):
                outcome = controller.on_pod("ADDED", pod_body(name=name, annotations=annotations))
                assert outcome.committed is not None
                await outcome.committed
            assert set(controller.state.claims) == {
                "/services/goods/goods-big",
                "/services/goods/goods-taken",
            }
            await eventually(
                lambda: "/services/goods/goods-big" in controller.refused, 10, "refused"
            )
            await eventually(lambda: "/services/goods/goods-taken" in controller.taken, 10, "taken")
            for name in ("goods-big", "goods-taken"):
                controller.on_pod("DELETED", pod_body(name=name))
            assert controller.refused == {} and controller.taken == {}
            assert controller.warned == {} and controller.conflicts == {}
        finally:
            await registry.close()
            await other.close()


async def test_the_echo_of_a_status_patch_renders_no_pod(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = registration_body({"selector": {"matchLabels": {"app": "goods"}}})
    controller.on_registration("ADDED", body)
    for n in range(20):
        controller.on_pod(None, pod_body(name=f"goods-{n}"))
    renders: list[str] = []

    def counting(pod: PodView, *args: Any) -> Desired:
        renders.append(pod.name)
        return desired_for_pod(pod, *args)

    monkeypatch.setattr(desired_module, "desired_for_pod", counting)
    controller.on_registration("MODIFIED", {**body, "status": {"endpoints": 20}})
    assert renders == []
    changed = registration_body({"selector": {"matchLabels": {"app": "goods"}}, "ttl": 30})
    controller.on_registration("MODIFIED", changed)
    assert len(renders) == 20  # a spec change still re-renders every selected pod


async def test_a_namespace_gets_at_most_its_key_quota(controller: Controller) -> None:
    controller.state.max_keys_per_namespace = 5
    outcomes = [
        controller.on_pod(None, pod_body(name=f"goods-{n}", annotations=opt_in("goods")))
        for n in range(8)
    ]
    assert len(controller.state.claims) == 5
    refused = [o for o in outcomes if o.now]
    assert len(refused) == 3
    assert "--max-keys-per-namespace" in refused[0].now[0].message
    # another namespace is not affected
    controller.on_pod(None, pod_body(name="other", namespace="else", annotations=opt_in("x")))
    assert "/services/x/other" in controller.state.claims
    # a freed slot is used again
    controller.on_pod("DELETED", pod_body(name="goods-0", annotations=opt_in("goods")))
    controller.on_pod("MODIFIED", pod_body(name="goods-7", annotations=opt_in("goods")))
    assert "/services/goods/goods-7" in controller.state.claims


async def test_claims_survive_a_restart_through_records_and_held_keys(
    controller: Controller, etcd_server: EtcdServer
) -> None:
    """A recorded claim stands; a range without a record goes to the namespace whose keys
    it already holds (an operator upgraded from a version without claims)."""
    store = controller.claims
    assert isinstance(store, ClaimStore)
    running = asyncio.create_task(store.run())
    try:
        outcome = controller.on_pod(None, pod_body(namespace="team-b", annotations=opt_in("pay")))
        assert outcome.committed is not None
        await outcome.committed
        await eventually(store.load, 5, "the claim recorded")
        assert await store.load() == {"/services/pay/": "team-b"}
    finally:
        running.cancel()

    successor = Controller(
        controller.registry.etcd,
        Kube(no_api),
        Defaults(),
        Term.alone(),
        events=listeners.Posted(),
        claims=listeners.Claims(),
        etcd_check=listeners.Reachable(),
        owner="c",
    )
    await successor.registry.start()  # adopts the held key
    successor.resume({"/services/other/": "team-c"}, [])
    assert successor.state.tenancy.owner("/services/other/") == "team-c"
    assert successor.state.tenancy.owner("/services/pay/") == "team-b"  # derived from the held key
    intruder = pod_body(name="x", namespace="team-a", annotations=opt_in("pay"))
    assert "belong to namespace team-b" in successor.on_pod(None, intruder).now[0].message


async def test_a_forged_claim_record_is_skipped(etcd_server: EtcdServer) -> None:
    etcd = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
    try:
        store = ClaimStore(etcd, Term.alone(), "c")
        await etcd.put(store.prefix + "/services/a/", '{"namespace": "team-b"}')
        await etcd.put(store.prefix + "/services/b/", '{"namespace": "../x"}')
        await etcd.put(store.prefix + "/services/c/", "[" * 3000)
        assert await store.load() == {"/services/a/": "team-b"}
    finally:
        await etcd.close()


async def test_a_standby_that_takes_over_tells_the_problems_it_saw(
    controller: Controller,
) -> None:
    """A replica that saw a pod's problem while it stood by (e.g. alone, its first pods came
    before its election) posts that Warning once it leads; not one that was fixed since,
    nor of a pod that is gone."""
    posted = listeners.posted(controller).notices
    controller.term.end("a standby")
    bad = {"etcd-registrar.io/service": "goods", "etcd-registrar.io/port": "nope"}
    controller.on_pod(None, pod_body(name="bad", annotations=bad))
    controller.on_pod(None, pod_body(name="fixed", annotations=bad))
    controller.on_pod("MODIFIED", pod_body(name="fixed", annotations=opt_in()))
    controller.on_pod(None, pod_body(name="gone", annotations=bad))
    controller.on_pod("DELETED", pod_body(name="gone", annotations=bad))
    assert posted == []
    controller.term.begin(None)
    controller.took_over()
    assert [(n.reason, n.pod["metadata"]["name"]) for n in posted] == [
        ("InvalidRegistration", "bad")
    ]
    assert "nope" in posted[0].message
    controller.took_over()  # told once
    assert len(posted) == 1


async def test_a_claim_batch_refused_by_the_fence_is_written_when_leading_again(
    etcd_server: EtcdServer,
) -> None:
    """R2-9: a deposed leader's fenced claim writes are kept, not dropped, and land once it
    leads again (a dropped release would come back at the next restart)."""
    etcd = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
    store = ClaimStore(etcd, Term(), "c")
    running = asyncio.create_task(store.run())
    try:
        first = await etcd.grant(10)
        won, held = await etcd.campaign("/etcd-registrar/c/leader", "{}", first)
        assert won and held is not None
        store.term.begin(Fence("/etcd-registrar/c/leader", held.create_revision))
        await etcd.revoke(first)  # deposed: the leader key is gone
        store.record("/services/pay/", "team-b")
        await eventually(lambda: not store.term.leading, 5, "the fenced write noticed")
        second = await etcd.grant(10)
        won, held = await etcd.campaign("/etcd-registrar/c/leader", "{}", second)
        assert won and held is not None
        store.term.begin(Fence("/etcd-registrar/c/leader", held.create_revision))
        await eventually(store.load, 5, "the kept claim written")
        assert await store.load() == {"/services/pay/": "team-b"}
    finally:
        running.cancel()
        await etcd.close()


def test_claims_ls_lists_every_owner_id_and_release_asks_first(etcd_server: EtcdServer) -> None:
    """`etcd-registrar claims ls|release`: an administrator's view, and a confirmed release."""

    async def record() -> None:
        etcd = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
        try:
            await etcd.put(claim_record("cluster-a", "/services/pay/"), '{"namespace": "team-b"}')
            await etcd.put(claim_record("cluster-b", "/skydns/x/"), '{"namespace": "team-c"}')
            await etcd.put(claim_record("cluster-b", "/services/bad/"), '{"namespace": "../x"}')
        finally:
            await etcd.close()

    asyncio.run(record())

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "etcd_registrar", "claims", *args]
        return subprocess.run(
            [*command, "--etcd-endpoints", etcd_server.endpoint],
            capture_output=True, text=True, check=False, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    listed = cli("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {"owner_id": "cluster-a", "range": "/services/pay/", "namespace": "team-b"},
        {"owner_id": "cluster-b", "range": "/skydns/x/", "namespace": "team-c"},
    ]
    assert "skipped /etcd-registrar/cluster-b/claims//services/bad/" in listed.stderr
    assert "cluster-b" not in cli("ls", "--owner-id", "cluster-a").stdout

    unasked = cli("release", "/services/pay/", "--owner-id", "cluster-a")
    assert unasked.returncode == 2 and "add --yes" in unasked.stderr
    assert "/services/pay/" in cli("ls").stdout
    missing = cli("release", "/services/nope/", "--owner-id", "cluster-a", "--yes")
    assert missing.returncode == 1 and "no claim on '/services/nope/'" in missing.stderr
    released = cli("release", "/services/pay/", "--owner-id", "cluster-a", "--yes")
    assert released.returncode == 0, released.stderr
    assert "/services/pay/" not in cli("ls").stdout


async def test_a_relist_that_no_longer_finds_a_pod_deletes_its_key_at_once(
    controller: Controller, etcd_server: EtcdServer
) -> None:
    """The pod watch relisted after 410 Gone: a pod of that namespace it did not find was
    deleted meanwhile, and its key goes now; pods of other namespaces are left alone."""
    reader = Etcd(EtcdConfig(endpoints=(etcd_server.endpoint,)))
    try:
        bodies = [
            pod_body(name=name, annotations=opt_in(service), namespace=ns)
            for name, ns, service in (
                ("goods-kept", "shop", "goods"),
                ("goods-gone", "shop", "goods"),
                ("goods-far", "far", "stock"),  # a service of its own: no claim conflict
            )
        ]
        for body in bodies:
            outcome = controller.on_pod(None, body)
            assert outcome.committed is not None
            await outcome.committed
        controller.on_listed("shop", {"uid-goods-kept"})
        assert set(controller.state.pods) == {"uid-goods-kept", "uid-goods-far"}
        await controller.registry.writes.drained.wait()
        kvs, _ = await reader.get_prefix("/services/")
        keys = {kv.key.rpartition("/")[2] for kv in kvs}
        assert keys == {"goods-kept", "goods-far"}, keys
    finally:
        await reader.close()
