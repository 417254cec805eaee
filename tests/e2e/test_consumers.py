"""The format presets, read back by the real consumer libraries (issue #5).

For each consumer a Go program from tests/consumers (built by `make tools`) reads the
registry with that consumer's own library and prints, as JSON lines, the endpoints each of
its views resolves (a gRPC resolver, a watcher, a GetService, DNS A/SRV answers). The
operator registers a Deployment with the consumer's preset. Through 3 replicas, a scale to
4 and back to 3, and one pod made unready and ready again, every view must reach exactly
the serving pods (with the metadata, ids and TTLs the preset promises), and no line a view
ever printed may show an address whose pod was not serving at about that moment.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.consumers.runner import ConsumerProcess, Observation, binary
from tests.consumers.timeline import PodTimeline
from tests.harness import (
    Cluster,
    PodInfo,
    ToolchainMissing,
    assert_stays,
    deployment_manifest,
    free_port,
    wait_for,
)
from tests.operator_process import OperatorProcess, registry_keys

pytestmark = pytest.mark.e2e

TTL = 5
PORT = 80
ZONE = "skydns.local"
STEP_TIMEOUT = 30.0
# How far a consumer's view may trail (or lead) this test's own pod watch: the operator's
# reaction, etcd's watch delivery and the consumer's polling (dnswatch asks every 100 ms).
GRACE = 2.0
REGISTRATION_METADATA = {"version": "v1"}
POD_METADATA = {"team": "shop"}  # the pod annotation, merged over the registration's
METADATA = {**REGISTRATION_METADATA, **POD_METADATA}

Commands = list[list[str]]  # [program, *args] per process to run


def _no_details(source: str, service: str, pod: PodInfo) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Consumer:
    """A consumer program, the preset it reads and what its views must show."""

    name: str
    format: str
    sources: tuple[str, ...]
    commands: Callable[[str, str, Path], Commands]  # (etcd URLs, service, tmp dir)
    details: Callable[[str, str, PodInfo], dict[str, Any]] = _no_details  # expected subset
    ip_only: frozenset[str] = field(default_factory=frozenset)  # views listing bare IPs
    spec: dict[str, str] = field(default_factory=dict)  # more ServiceRegistration spec
    # Start the program only once etcd holds every key under this prefix ({service} filled).
    start_when_registered: str | None = None

    def address(self, source: str, ip: str) -> str:
        return ip if source in self.ip_only else f"{ip}:{PORT}"

    def host(self, source: str, address: str) -> str:
        return address if source in self.ip_only else address.rpartition(":")[0].strip("[]")


def coredns(etcd: str, service: str, tmp: Path) -> Commands:
    port = free_port()
    corefile = tmp / "Corefile"
    endpoints = " ".join(etcd.split(","))
    corefile.write_text(
        f"{ZONE}:{port} {{\n  bind 127.0.0.1\n  errors\n"
        f"  etcd {{\n    path /skydns\n    endpoint {endpoints}\n  }}\n}}\n"
    )
    return [
        ["coredns", "-conf", str(corefile)],
        ["dnswatch", "-server", f"127.0.0.1:{port}", "-name", f"{service}.{ZONE}"],
    ]


CONSUMERS = [
    Consumer(
        "etcd-naming",
        "etcd-naming",
        ("resolver", "manager"),
        # The resolver drops one leading "/" of the target path: four slashes for /services.
        lambda etcd, svc, _: [
            ["etcd-naming", "-etcd", etcd, "-target", f"etcd:////services/{svc}"]
        ],
        lambda source, svc, pod: {"metadata": None},  # never carried: it panics grpc-go 1.71
    ),
    Consumer(  # keys without a leading slash, for the "etcd:///<service>" targets of etcd's docs
        "etcd-naming-no-slash",
        "etcd-naming",
        ("resolver", "manager"),
        lambda etcd, svc, _: [["etcd-naming", "-etcd", etcd, "-target", f"etcd:///{svc}"]],
        lambda source, svc, pod: {"metadata": None},
        spec={"prefix": "", "key": "{service}/{address}"},
    ),
    Consumer(
        "kratos",
        "kratos",
        ("resolver", "watch", "get"),
        lambda etcd, svc, _: [["kratos", "-etcd", etcd, "-service", svc]],
        lambda source, svc, pod: {
            "id": pod.name,
            "name": svc,
            "version": METADATA["version"],
            "metadata": METADATA,
        },
    ),
    Consumer(
        "go-zero",
        "go-zero",
        ("subscriber",),
        lambda etcd, svc, _: [["go-zero", "-etcd", etcd, "-key", svc]],
    ),
    Consumer(
        "go-micro",
        "go-micro",
        ("get", "cache"),
        lambda etcd, svc, _: [["go-micro", "-etcd", etcd, "-service", svc]],
        lambda source, svc, pod: {
            "id": f"{svc}-{pod.name}",
            "service": svc,
            "version": METADATA["version"],
            "service_metadata": METADATA,
            "metadata": {**METADATA, "protocol": "grpc"},
        },
        # go-micro's registry cache drops watch events that arrive while it is filled the
        # first time (cache.update: "not going to cache anything unless there was already a
        # lookup"), so a node written then stays unseen for the cache TTL (1 min), whoever
        # writes it. Fill it once the three keys are there; later steps go through its watch.
        start_when_registered="/micro/registry/{service}/",
    ),
    Consumer(
        "coredns",
        "coredns",
        ("A", "SRV"),
        coredns,
        lambda source, svc, pod: (
            {"ttl": TTL} if source == "A" else {"ttl": TTL, "target": f"{pod.name}.{svc}.{ZONE}."}
        ),
        ip_only=frozenset({"A"}),
    ),
]


class ConsumerView:
    """The consumer's processes, the expected views per step, and the never-unready check."""

    def __init__(self, consumer: Consumer, service: str, pods: PodTimeline) -> None:
        self.consumer, self.service, self.pods = consumer, service, pods
        self.procs: list[ConsumerProcess] = []
        self.checked: list[int] = []  # observations already checked, per process
        self.t0 = time.monotonic()

    def start(self, commands: Commands, cleanup: ExitStack) -> None:
        for program, *args in commands:
            self.procs.append(ConsumerProcess(program, *args).start())
            cleanup.callback(self.procs[-1].stop)
            self.checked.append(0)

    def latest(self) -> dict[str, Observation]:
        for proc in self.procs:
            proc.check_running()
        return {s: o for proc in self.procs for s, o in proc.latest().items()}

    def want(self, pods: list[PodInfo]) -> dict[str, frozenset[str]]:
        ips = [p.ip for p in pods if p.serving and p.ip]
        return {
            s: frozenset(self.consumer.address(s, ip) for ip in ips) for s in self.consumer.sources
        }

    def shows(self, pods: list[PodInfo]) -> dict[str, Observation]:
        """The latest observations if every view shows exactly the serving pods, else raise."""
        latest, want = self.latest(), self.want(pods)
        have = {s: latest[s].endpoints if s in latest else None for s in want}
        if have != want:
            raise AssertionError(f"views {have} != serving pods {want}")
        return latest

    def expect(self, pods: list[PodInfo], step: str) -> None:
        """Wait until every view shows exactly the serving pods, with the right details."""
        latest = wait_for(
            lambda: self.shows(pods),
            STEP_TIMEOUT,
            interval=0.05,
            message=f"{self.consumer.name} after {step}: every view shows the serving pods",
        )
        by_address = {self.consumer.address(s, p.ip or ""): p for s in latest for p in pods}
        for source, seen in latest.items():
            for address in seen.endpoints:
                want = self.consumer.details(source, self.service, by_address[address])
                got = seen.details.get(address, {})
                assert {k: got.get(k) for k in want} == want, (step, source, address, got)
        self.check_never_unready(step)

    def stays(self, pods: list[PodInfo], seconds: float, step: str) -> None:
        """The views keep showing exactly the serving pods (resyncs do not bring others back)."""
        assert_stays(
            lambda: self.shows(pods), seconds, message=f"{self.consumer.name} after {step}"
        )
        self.check_never_unready(step)

    def check_never_unready(self, step: str) -> None:
        """Every address any line showed belonged to a pod serving at about that moment."""
        bad = []
        for i, proc in enumerate(self.procs):
            seen = proc.observations(self.checked[i])
            self.checked[i] += len(seen)
            for obs in seen:
                for address in sorted(obs.endpoints):
                    ip = self.consumer.host(obs.source, address)
                    if not self.pods.served(ip, obs.at, GRACE):
                        bad.append(
                            f"{obs.source} showed {address} at {obs.at - self.t0:+.2f}s; "
                            f"that pod served: {self.pods.describe(ip, self.t0)}"
                        )
        assert not bad, f"{self.consumer.name} until {step}: " + "; ".join(bad)


@pytest.fixture
def cleanup() -> Iterator[ExitStack]:
    """Processes the test starts are stopped here, even when it fails."""
    with ExitStack() as stack:
        yield stack


@pytest.mark.parametrize("consumer", CONSUMERS, ids=lambda c: c.name)
def test_consumer_sees_exactly_the_ready_pods(
    cluster: Cluster,
    namespace: str,
    crd: None,
    consumer: Consumer,
    cleanup: ExitStack,
    tmp_path: Path,
) -> None:
    service = f"shop-{namespace.rsplit('-', 1)[-1]}"  # unique: the registry etcd is shared
    commands = consumer.commands(cluster.etcd_endpoints, service, tmp_path)
    try:
        for program, *_ in commands:
            binary(program)
    except ToolchainMissing as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:
        pytest.fail(missing, pytrace=False)

    operator = OperatorProcess(cluster, namespace, "--resync", "1s").start()
    cleanup.callback(operator.stop)
    registration = {
        "apiVersion": "etcd-registrar.io/v1alpha1",
        "kind": "ServiceRegistration",
        "metadata": {"name": service},
        "spec": {
            "format": consumer.format,
            "ttl": TTL,
            "metadata": REGISTRATION_METADATA,
            **consumer.spec,
        },
    }
    cluster.apply(registration, namespace)
    timeline = PodTimeline(cluster, namespace).start()
    cleanup.callback(timeline.stop)
    view = ConsumerView(consumer, service, timeline)
    if consumer.start_when_registered is None:
        view.start(commands, cleanup)
    annotations = {
        "etcd-registrar.io/service": service,
        "etcd-registrar.io/metadata": json.dumps(POD_METADATA),
    }
    cluster.create_deployment(namespace, deployment_manifest("goods", 3, annotations=annotations))
    pods = cluster.wait_deployment_serving(namespace, "goods", 3)
    if consumer.start_when_registered is not None:
        prefix = consumer.start_when_registered.format(service=service)
        wait_for(
            lambda: len(registry_keys(cluster.etcd_endpoints, prefix)) == 3,
            STEP_TIMEOUT,
            message=f"3 keys under {prefix}",
        )
        view.start(commands, cleanup)
    view.expect(pods, "3 replicas")
    for replicas in (4, 3):
        cluster.scale(namespace, "goods", replicas)
        pods = cluster.wait_deployment_serving(namespace, "goods", replicas)
        view.expect(pods, f"scaling to {replicas}")

    victim = pods[0].name
    cluster.set_pod_ready(namespace, victim, False)
    pods = cluster.pods_of_deployment(namespace, "goods")
    assert [p.name for p in pods if not p.serving] == [victim]
    view.expect(pods, f"{victim} unready")
    view.stays(pods, 3.0, f"{victim} unready (3 resyncs later)")

    cluster.set_pod_ready(namespace, victim, True)
    view.expect(cluster.wait_deployment_serving(namespace, "goods", 3), f"{victim} ready again")
