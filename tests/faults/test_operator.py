"""The operator's and the API server's faults (issue #22) on the local cluster: two
replicas, pods whose readiness churns, the leader killed (-9) or frozen (SIGSTOP) past its
election lease, or the API server killed and restarted. The readiness history comes from a
pod watch (PodTimeline), the consumer's from an etcd watch; the checker holds them to the
bounds. No lease expires here by design: the standby keeps the leader's leases alive, so a
DELETE of a ready pod's key is a violation."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.consumers.timeline import PodTimeline
from tests.e2e.test_ha import follows, goods, leader_pid
from tests.faults.checker import Window, check
from tests.faults.recorders import ConsumerRecorder
from tests.faults.scenario import save_row
from tests.harness import CLUSTER_DIR, Cluster, KubectlError, wait_for
from tests.operator_process import OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

PODS = 6
RESYNC = 5.0  # the operators' --resync 2s sweep, plus the 3 s TTL of a lease it re-grants


@pytest.fixture
def pair(cluster: Cluster, namespace: str, crd: None) -> Iterator[list[OperatorProcess]]:
    """Two replicas of one installation, the first leading."""
    first = OperatorProcess(cluster, namespace, "--resync", "2s").start()
    wait_for(lambda: leader_pid(cluster, namespace) == first.pid, 20, message="first leads")
    replicas = [first, OperatorProcess(cluster, namespace, "--resync", "2s").start()]
    yield replicas
    for proc in replicas:
        proc.signal(signal.SIGCONT)
        proc.stop()


class Churn:
    """Flips a random pod's Ready condition about every second (as a kubelet would), in a
    thread, until stopped."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="churn")
        self._random = random.Random(22)  # noqa: S311 (a repeatable churn)

    def __enter__(self) -> Churn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            # the pod may go away meanwhile, the API server may be restarting
            with contextlib.suppress(KubectlError):
                pods = self.cluster.pods_of_deployment(self.namespace, "goods")
                pod = self._random.choice(pods)
                self.cluster.set_pod_ready(self.namespace, pod.name, not pod.ready)


def kill_leader(cluster: Cluster, namespace: str, pair: list[OperatorProcess]) -> None:
    leader, standby = pair
    leader.kill()
    pair.remove(leader)
    wait_for(lambda: leader_pid(cluster, namespace) == standby.pid, 30, message="takeover")


BURST = 1000  # pods that come up at once


def kill_leader_in_a_burst(cluster: Cluster, namespace: str, pair: list[OperatorProcess]) -> None:
    """Scale to BURST pods and kill -9 the leader at a random point of their coming up."""
    cluster.scale(namespace, "goods", BURST)
    time.sleep(random.uniform(0.5, 8.0))  # noqa: S311 (any point must do)
    kill_leader(cluster, namespace, pair)

    def up() -> bool:  # running, with an address (the churn keeps flipping some Ready)
        return sum(1 for p in cluster.pods_of_deployment(namespace, "goods") if p.ip) == BURST

    wait_for(up, 300, message=f"{BURST} pods up")


def freeze_leader(cluster: Cluster, namespace: str, pair: list[OperatorProcess]) -> None:
    """SIGSTOP past the election lease; SIGCONT once the standby leads."""
    leader, standby = pair
    leader.signal(signal.SIGSTOP)
    wait_for(lambda: leader_pid(cluster, namespace) == standby.pid, 30, message="takeover")
    leader.signal(signal.SIGCONT)
    wait_for(lambda: "stepping down as leader" in leader.tail(200), 20, message="step down")


def restart_apiserver(cluster: Cluster, namespace: str, pair: list[OperatorProcess]) -> None:
    """Kill the local cluster's kube-apiserver and start it again with the same command line,
    as hack/cluster-up.sh does; every watch on it breaks. SIGKILL: on SIGTERM it drains its
    watches for a minute."""
    if cluster.external:
        pytest.skip("restarts the local cluster's API server")
    pid_file = CLUSTER_DIR / "pids" / "kube-apiserver.pid"
    pid = int(pid_file.read_text())
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    port = int(args[args.index(b"--secure-port") + 1])
    os.kill(pid, signal.SIGKILL)
    # the process turns zombie before its last thread has let go of the port
    wait_for(lambda: exited(pid) and port_free(port), 10, message="the API server stopped")
    with (CLUSTER_DIR / "logs" / "kube-apiserver.log").open("ab") as log:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    pid_file.write_text(f"{proc.pid}\n")
    wait_for(lambda: ready(cluster), 90, message="the API server is back")


def exited(pid: int) -> bool:
    """Gone, or a zombie: its parent (cluster-up.sh) is gone, and whoever inherited it may
    never reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def ready(cluster: Cluster) -> bool:
    try:
        return cluster.kubectl("get", "--raw", "/readyz", timeout=5).strip() == "ok"
    except (KubectlError, subprocess.TimeoutExpired):
        return False


FAULTS = {
    "operator leader SIGKILL": (kill_leader, True),
    f"operator leader SIGKILL in a {BURST:,}-pod burst": (kill_leader_in_a_burst, True),
    "operator leader SIGSTOP": (freeze_leader, True),
    "kube-apiserver kill -9 and restart": (
        restart_apiserver,
        False,
    ),  # nothing churns while it is down
}


@pytest.mark.parametrize("fault", FAULTS)
def test_operator_and_api_faults(
    cluster: Cluster, namespace: str, pair: list[OperatorProcess], fault: str
) -> None:
    cause, churns = FAULTS[fault]
    prefix = goods(cluster, namespace, PODS)
    wait_for(lambda: follows(cluster, namespace, prefix), 30, message="registered")
    timeline = PodTimeline(cluster, namespace).start()
    windows: list[Window] = []
    try:
        with ConsumerRecorder(cluster.etcd_endpoints.split(","), [prefix]) as consumer:
            with Churn(cluster, namespace):
                time.sleep(3)
                start = time.monotonic()
                cause(cluster, namespace, pair)
                windows.append(Window(fault, start, time.monotonic()))
                time.sleep(3)
            cluster.scale(namespace, "goods", 0)
            wait_for(lambda: not consumer.view(), 300, message="every key gone")
        wants = timeline.wants(key=lambda pod: prefix + pod, value=lambda ip: f"{ip}:80")
        (window,) = windows
        if churns:
            assert any(window.start <= w.at <= window.end for w in wants), "no churn in it"
        report = check(wants, consumer.history(), windows, end=time.monotonic(), resync=RESYNC)
    finally:
        timeline.stop()
    save_row(report, windows, consumer)
    assert report.violations(windows, RESYNC) == []
