"""Operating the operator (issue #4): metrics, probes, logs, dry run, shutdown, against the
local cluster and real etcd servers, through the real `etcd-registrar run` process (and, where
a condition cannot be induced from outside, the real App in-process on the real cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from etcd_registrar import kube
from etcd_registrar.app import App
from etcd_registrar.config import Settings
from etcd_registrar.kube import Kube
from etcd_registrar.podwatch import PodHandler, PodWatcher
from tests.aio import eventually, holds
from tests.e2e.test_registrar import goods, registration, wait_registry
from tests.harness import (
    REPO_ROOT,
    Cluster,
    EtcdServer,
    assert_stays,
    deployment_manifest,
    free_port,
    wait_for,
)
from tests.operator_process import OperatorProcess, delete_key, registry_keys

pytestmark = pytest.mark.e2e

SHUTDOWN_BOUND = 10.0  # seconds from SIGTERM to exit; the chart grants more (asserted below)
BAD_ANNOTATIONS = {"etcd-registrar.io/service": "Bad/Name", "etcd-registrar.io/port": "70000"}


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def running(cluster: Cluster, namespace: str, *args: str) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(cluster, namespace, *args).start()
    try:
        yield proc
    finally:
        proc.stop()


class Scraper:
    """Reads /metrics the way Prometheus does (its own text parser)."""

    def __init__(self, port: int) -> None:
        self.port = port

    def samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        """One sample's value; 0 when the series does not exist (yet)."""
        return self.samples().get((name, frozenset(labels.items())), 0.0)


def probe(port: int, path: str, timeout: float = 2.0) -> tuple[int, str] | None:
    """(status, body) of a probe, or None when nothing answers within `timeout`."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None


def json_records(proc: OperatorProcess) -> list[dict[str, Any]]:
    """Every line of the operator's output as JSON (stdout and stderr both; any other line
    fails the test)."""
    records = []
    text = proc.log.read_text()
    complete = text if text.endswith("\n") else text.rpartition("\n")[0]  # still being written
    for line in complete.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return records


def held(cluster: Cluster, owner: str) -> dict[str, str]:
    """key -> lease of every key on `owner`'s leases, as `etcd-registrar ls` reports them."""
    command = [sys.executable, "-m", "etcd_registrar", "ls", "--json", "--owner-id", owner]
    out = subprocess.run(command, env=cluster.env(), capture_output=True, text=True, check=True)
    return {row["key"]: row["lease"] for row in json.loads(out.stdout)}


# --------------------------------------------------------------------------- metrics


def test_metrics_follow_what_the_operator_does(
    cluster: Cluster, namespace: str, prefix: str, crd: None
) -> None:
    port = free_port()
    with running(cluster, namespace, "--resync", "1s", "--metrics-port", str(port)) as op:
        m = Scraper(port)
        assert any(name == "etcd_registrar_build_info" for name, _ in m.samples())
        pods = goods(cluster, namespace, prefix, replicas=3)
        keys = wait_registry(cluster, namespace, prefix)
        held = {"namespace": namespace, "service": "goods"}
        wait_for(lambda: m("etcd_registrar_endpoints", **held) == 3, 15, message="3 endpoints")
        assert m("etcd_registrar_pod_transitions_total", change="register") >= 3
        assert m("etcd_registrar_propagation_seconds_count") >= 3
        assert m("etcd_registrar_etcd_request_duration_seconds_count", operation="txn") >= 1
        assert m("etcd_registrar_etcd_txn_operations_count") >= 1
        assert m("etcd_registrar_leases") >= 1
        assert m("etcd_registrar_etcd_reachable") == 1

        sweeps = m("etcd_registrar_sweeps_total")
        wait_for(lambda: m("etcd_registrar_sweeps_total") >= sweeps + 2, 10, message="sweeps run")

        drift, latency = (
            m("etcd_registrar_drift_repaired_total"),
            m("etcd_registrar_propagation_seconds_count"),
        )
        victim = sorted(keys)[0]
        delete_key(cluster.etcd_endpoints, victim)
        wait_for(
            lambda: (
                m("etcd_registrar_drift_repaired_total") > drift
                and registry_keys(cluster.etcd_endpoints, victim).get(victim) == keys[victim]
            ),
            10,
            message="the sweep restored the key, and counted it",
        )
        # a repair is not a pod transition: it does not feed the propagation histogram
        assert m("etcd_registrar_propagation_seconds_count") == latency
        # the text log (the default format) names key, pod, namespace and service
        pod_name = victim.rsplit("/", 1)[1]
        assert any(
            victim in line and f"{namespace}/{pod_name}" in line and "service goods" in line
            for line in op.log.read_text().splitlines()
        ), op.tail()

        cluster.set_pod_ready(namespace, pods[0].name, False)
        wait_for(
            lambda: (
                m("etcd_registrar_pod_transitions_total", change="deregister") >= 1
                and m("etcd_registrar_endpoints", **held) == 2
            ),
            10,
            message="a deregistration counted, 2 endpoints left",
        )

        cluster.create_deployment(
            namespace, deployment_manifest("broken", 1, annotations=BAD_ANNOTATIONS)
        )
        wait_for(
            lambda: m("etcd_registrar_invalid_inputs_total", kind="pod") >= 1,
            20,
            message="the bad annotation counted",
        )

        # A name that is no service name passes the API server but not the operator.
        bad = "r" * 70
        cluster.apply(registration(bad), namespace)

        def invalid_spec() -> bool:
            status = cluster.get_json("sreg", bad, "-n", namespace).get("status", {})
            return any(c["type"] == "InvalidSpec" for c in status.get("conditions") or [])

        wait_for(invalid_spec, 15, message="InvalidSpec condition")
        # once, although the status patch comes back as another event of the registration
        assert_stays(
            lambda: m("etcd_registrar_invalid_inputs_total", kind="registration") == 1,
            3,
            message="the invalid registration counted exactly once",
        )
        assert m("etcd_registrar_endpoints", namespace=namespace, service=bad) == 0

        cluster.apply(registration("solo", prefix=prefix, key="{prefix}/{service}"), namespace)
        cluster.create_deployment(
            namespace,
            deployment_manifest("solo", 2, annotations={"etcd-registrar.io/service": "solo"}),
        )
        cluster.wait_deployment_serving(namespace, "solo", 2)
        wait_for(lambda: m("etcd_registrar_key_conflicts") == 1, 15, message="one conflicting key")


# --------------------------------------------------------------------------- probes


def test_readiness_follows_etcd_and_liveness_ignores_its_outages(
    cluster: Cluster, namespace: str, prefix: str, crd: None, etcd_server: EtcdServer
) -> None:
    port = free_port()
    args = ("--etcd-endpoints", etcd_server.endpoint, "--etcd-timeout", "1")
    with running(cluster, namespace, *args, "--metrics-port", str(port)) as op:
        m = Scraper(port)
        goods(cluster, namespace, prefix, replicas=2)

        def registered() -> bool:
            return len(registry_keys(etcd_server.endpoint, f"{prefix}/goods/")) == 2

        wait_for(registered, 20, message="keys in the private etcd")
        assert probe(op.health_port, "/readyz") == (200, "ok\n")

        def readiness(status: int) -> str | None:
            answer = probe(op.health_port, "/readyz")
            return answer[1] if answer and answer[0] == status else None

        etcd_server.kill()
        reason = wait_for(lambda: readiness(503), 15, message="not ready without etcd")
        assert reason.startswith("etcd unreachable")
        assert probe(op.health_port, "/healthz") == (200, "ok\n")  # a restart would not help
        assert m("etcd_registrar_etcd_reachable") == 0
        wait_for(
            lambda: m("etcd_registrar_lease_keepalive_failures_total") >= 1,
            10,
            message="the broken keepalive stream counted",
        )
        assert sum(
            value
            for (name, labels), value in m.samples().items()
            if name == "etcd_registrar_etcd_request_errors_total"
            and ("operation", "ping") in labels
        )
        etcd_server.start()
        wait_for(lambda: readiness(200), 15, message="ready once etcd is back")

        etcd_server.pause()  # a hang, not a refusal: requests time out
        try:
            wait_for(lambda: readiness(503), 15, message="not ready while etcd hangs")
        finally:
            etcd_server.resume()
        wait_for(lambda: readiness(200), 15, message="ready once etcd answers again")

        lost = m("etcd_registrar_leases_lost_total")
        etcd_server.wipe()  # the leases are gone with the data
        wait_for(registered, 30, message="keys re-written after etcd lost its data")
        wait_for(
            lambda: m("etcd_registrar_leases_lost_total") > lost,
            10,
            message="the lost lease counted",
        )
        wait_for(lambda: readiness(200), 15, message="ready after the wipe")
        assert probe(op.health_port, "/healthz") == (200, "ok\n")


def test_liveness_fails_while_the_event_loop_is_frozen(
    cluster: Cluster, namespace: str, crd: None
) -> None:
    """The probes share the operator's event loop: a frozen loop answers nothing, which the
    kubelet counts as a failed probe (a probe server on its own thread would say 200).
    Metrics share the probes' port here: one server then serves all three paths."""
    op = OperatorProcess(cluster, namespace)
    op.extra = ("--metrics-port", str(op.health_port))
    op.start()
    try:
        assert op.proc is not None
        assert probe(op.health_port, "/healthz") == (200, "ok\n")
        assert "etcd_registrar_build_info" in (probe(op.health_port, "/metrics") or (0, ""))[1]
        os.kill(op.proc.pid, signal.SIGSTOP)
        try:
            assert probe(op.health_port, "/healthz", timeout=2) is None
        finally:
            os.kill(op.proc.pid, signal.SIGCONT)
        wait_for(
            lambda: probe(op.health_port, "/healthz") == (200, "ok\n"), 10, message="live again"
        )
    finally:
        op.stop()


async def test_not_ready_until_every_pod_is_seen(
    cluster: Cluster, namespace: str, crd: None, etcd_server: EtcdServer
) -> None:
    """The real App on the real cluster, with the test in the pod watcher's place
    delivering the pod events, so the moment the view completes is under its control."""
    cluster.create_deployment(namespace, deployment_manifest("plain", 3))
    cluster.wait_deployment_serving(namespace, "plain", 3)
    bodies = cluster.get_json("pods", "-n", namespace)["items"]
    assert len(bodies) == 3
    settings = Settings(
        etcd_endpoints=[etcd_server.endpoint],
        namespace=[namespace],
        owner_id="view",
        health_port=0,
        metrics_port=0,
    )
    app = App.create(settings, cluster.credentials())
    app.pods = SilentWatcher(app.controller.kube)
    await app.start()
    incomplete = (False, "initial pod view incomplete")
    try:
        await eventually(lambda: app.health.ready() == incomplete, 10, "started, view pending")
        for body in bodies[:2]:
            app.controller.on_pod("ADDED", body)
        # longer than a relist (every 2 s): the list of pods alone does not complete the view
        await holds(lambda: app.health.ready() == incomplete, 3, "not ready with a pod unseen")
        app.controller.on_pod("ADDED", bodies[2])
        await eventually(lambda: app.health.ready() == (True, "ok"), 5, "ready once all seen")
        assert app.health.live() == (True, "ok")
    finally:
        await app.stop()


class SilentWatcher(PodWatcher):
    """Delivers nothing: the test hands the pod events over itself."""

    async def run(self, handle: PodHandler) -> None:
        await asyncio.Event().wait()


class FreezableProxy:
    """A TCP relay to the API server that can stop relaying: a hung API server, for real."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> FreezableProxy:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.upstream)
        self.writers |= {client_w, server_w}
        await asyncio.gather(
            self._pipe(client_r, server_w), self._pipe(server_r, client_w), return_exceptions=True
        )

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self.flowing.wait()
                dst.write(data)
                await dst.drain()
        finally:
            dst.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.writers:
                writer.close()
            await self.server.wait_closed()


def kubeconfig_via(cluster: Cluster, port: int, dest: Path) -> Path:
    """The cluster's kubeconfig with the API server reached through 127.0.0.1:`port`."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dest.write_text(yaml.safe_dump(config))
    return dest


async def proxied_api(cluster: Cluster, tmp_path: Path) -> tuple[FreezableProxy, Any]:
    """A started FreezableProxy to the cluster's API server, and credentials through it."""
    server = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    proxy = await FreezableProxy(host.strip("[]"), int(port)).start()
    kubeconfig = kubeconfig_via(cluster, proxy.port, tmp_path / "kubeconfig")
    return proxy, functools.partial(kube.login, kubeconfig)


async def test_a_sweep_stuck_on_a_hung_api_server_fails_liveness(
    cluster: Cluster, namespace: str, crd: None, etcd_server: EtcdServer, tmp_path: Path
) -> None:
    """A stuck loop cannot be caused from outside the process without a hung dependency, so
    the test hangs one: the API server, behind a relay that stops relaying. The sweep then
    blocks on its pod list, and liveness must fail; the deadline is shortened from the
    production 3 x resync + 60 s so the test need not wait minutes."""
    proxy, api = await proxied_api(cluster, tmp_path)
    settings = Settings(
        etcd_endpoints=[etcd_server.endpoint],
        namespace=[namespace],  # no pods: the view completes with the first list
        owner_id="stuck",
        resync=0.2,
        health_port=0,
        metrics_port=0,
    )
    app = App.create(settings, api)
    app.health.sweep_deadline = 2.0
    await app.start()
    try:
        await eventually(lambda: app.health.ready() == (True, "ok"), 10, "ready")
        await holds(lambda: app.health.live() == (True, "ok"), 3, "live while sweeps run")
        proxy.flowing.clear()
        verdict = await eventually(
            lambda: ((answer := app.health.live()) != (True, "ok") and answer) or None,
            10,
            "not live",
        )
        assert verdict[0] is False and verdict[1].startswith("sweep loop stuck"), verdict
        assert app.health.ready() == (True, "ok")  # nothing a consumer of readiness should see
        proxy.flowing.set()
        await eventually(lambda: app.health.live() == (True, "ok"), 10, "live once it answers")
    finally:
        proxy.flowing.set()
        await app.stop()
        await proxy.close()


async def test_kubernetes_calls_give_up_on_a_hung_api_server(
    cluster: Cluster, namespace: str, prefix: str, crd: None, tmp_path: Path
) -> None:
    """Every call the operator makes itself has a request timeout: on a hung API server the
    pod list and the status patch fail after it (the sweep carries on, exit is not held up
    by a worker thread) instead of waiting for ever. The test shortens the production
    timeout (kube.REQUEST_TIMEOUT) to keep the wait short."""
    proxy, api = await proxied_api(cluster, tmp_path)
    kube = Kube(api, [namespace], timeout=(1.0, 2.0))
    cluster.apply(registration("goods", prefix=prefix), namespace)
    try:
        assert await kube.list_pod_uids() == set()  # flowing: answers
        await kube.patch_registration_status(namespace, "goods", {"endpoints": 0})
        proxy.flowing.clear()
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "pod list": kube.list_pod_uids,
            "status patch": lambda: kube.patch_registration_status(
                namespace, "goods", {"endpoints": 1}
            ),
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(aiohttp.ServerTimeoutError):  # the read timeout
                await asyncio.wait_for(call(), 30)  # TimeoutError here: no request timeout
            took = time.monotonic() - started
            assert took < 15, f"{name}: gave up only after {took:.1f} s"
    finally:
        proxy.flowing.set()
        await proxy.close()


# --------------------------------------------------------------------------- logs


def test_json_logs_name_pod_namespace_service_and_key(
    cluster: Cluster, namespace: str, prefix: str, crd: None
) -> None:
    with running(cluster, namespace, "--log-format", "json") as op:
        pods = goods(cluster, namespace, prefix, replicas=2)
        keys = wait_registry(cluster, namespace, prefix)
        gone = pods[0]
        key = f"{prefix}/goods/{gone.name}"
        cluster.set_pod_ready(namespace, gone.name, False)
        wait_for(
            lambda: any(r["message"].startswith(f"delete {key} ") for r in json_records(op)),
            10,
            message="the deletion of the unready pod's key logged (at commit)",
        )
    records = json_records(op)  # after a clean stop: every line, shutdown included
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    about_keys = [r for r in records if "key" in r]
    for record in about_keys:
        assert all(record.get(f) for f in ("pod", "namespace", "service")), record
    named = {
        (r["message"].split()[0], r["key"], r["pod"], r["namespace"], r["service"])
        for r in about_keys
    }
    for written in keys:
        pod = written.rsplit("/", 1)[1]
        assert ("put", written, pod, namespace, "goods") in named, named
    assert ("delete", key, gone.name, namespace, "goods") in named, named


# --------------------------------------------------------------------------- dry run


def test_dry_run_logs_every_write_and_writes_nothing(
    cluster: Cluster, namespace: str, prefix: str, crd: None
) -> None:
    args = ("--dry-run", "--log-format", "json", "--resync", "1s")
    with running(cluster, namespace, *args) as op:
        pods = goods(cluster, namespace, prefix, replicas=3)
        want = {f"{prefix}/goods/{p.name}" for p in pods}

        def would(verb: str) -> Counter[str]:
            return Counter(
                r["key"]
                for r in json_records(op)
                if r.get("dry_run") and r["message"].startswith(f"dry-run: would {verb} ")
            )

        def written() -> set[str]:
            keys = set(registry_keys(cluster.etcd_endpoints, f"{prefix}/"))
            owner = registry_keys(cluster.etcd_endpoints, f"/etcd-registrar/{namespace}/")
            return keys | set(owner)

        wait_for(lambda: set(would("put")) >= want, 20, message="every put logged")
        # nothing in etcd: no key, no lease record, across several sweeps (resync 1 s)
        assert_stays(lambda: not written(), 3.5, message="nothing written to etcd")
        assert would("put") == dict.fromkeys(want, 1)  # each logged once, not every sweep
        gone = f"{prefix}/goods/{pods[0].name}"
        cluster.set_pod_ready(namespace, pods[0].name, False)
        wait_for(lambda: would("delete") == {gone: 1}, 10, message="the delete logged")
        assert not written()


# --------------------------------------------------------------------------- shutdown


def test_sigterm_exits_promptly_and_a_successor_keeps_every_key(
    cluster: Cluster, namespace: str, prefix: str, crd: None
) -> None:
    """Keys stay on their leases over a restart (no flap in a Recreate rollout): the
    successor adopts the leases. Without a successor they go with their TTL."""
    values = yaml.safe_load((REPO_ROOT / "charts/etcd-registrar/values.yaml").read_text())
    assert values["terminationGracePeriodSeconds"] > SHUTDOWN_BOUND
    ttl = 10  # the default: long enough for a successor to start within it
    cluster.apply(registration("goods", prefix=prefix, ttl=ttl), namespace)
    annotations = {"etcd-registrar.io/service": "goods"}
    cluster.create_deployment(namespace, deployment_manifest("goods", 2, annotations=annotations))
    cluster.wait_deployment_serving(namespace, "goods", 2)

    first = OperatorProcess(cluster, namespace).start()
    keys = wait_registry(cluster, namespace, prefix)
    leases = held(cluster, namespace)
    assert leases.keys() == keys.keys()
    assert first.proc is not None
    first.proc.send_signal(signal.SIGTERM)
    try:
        assert first.proc.wait(SHUTDOWN_BOUND) == 0
    except subprocess.TimeoutExpired:
        first.kill()
        pytest.fail(f"no exit within {SHUTDOWN_BOUND:g}s of SIGTERM:\n{first.tail()}")
    first.proc = None
    assert held(cluster, namespace) == leases  # not revoked

    successor = OperatorProcess(cluster, namespace).start()
    wait_registry(cluster, namespace, prefix)
    # the same lease ids: adopted and renewed, so the keys never expired in between
    assert held(cluster, namespace) == leases
    successor.stop()
    wait_for(
        lambda: not held(cluster, namespace), ttl + 5, message="without a successor keys expire"
    )


def test_sigterm_during_an_etcd_outage_still_exits_in_time(
    cluster: Cluster, namespace: str, prefix: str, crd: None, etcd_server: EtcdServer
) -> None:
    args = ("--etcd-endpoints", etcd_server.endpoint, "--etcd-timeout", "1", "--log-format", "json")
    op = OperatorProcess(cluster, namespace, *args).start()

    def logged(text: str) -> bool:
        return any(text in r["message"] for r in json_records(op))

    try:
        pods = goods(cluster, namespace, prefix, replicas=2)
        wait_for(
            lambda: len(registry_keys(etcd_server.endpoint, f"{prefix}/goods/")) == 2,
            20,
            message="keys in the private etcd",
        )
        etcd_server.kill()
        cluster.set_pod_ready(namespace, pods[0].name, False)  # a delete that cannot commit
        wait_for(
            lambda: logged("etcd write failed, will retry"),
            15,
            message="the write is queued and retried",
        )
        assert op.proc is not None
        op.proc.send_signal(signal.SIGTERM)
        assert op.proc.wait(SHUTDOWN_BOUND) == 0
        # it drained what it could, or had already stepped down as leader (its election
        # lease could not be confirmed); every line, warnings included, is JSON
        assert logged("etcd writes still queued") or logged("stepping down as leader")
    finally:
        op.kill()
