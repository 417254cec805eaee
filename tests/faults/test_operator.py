"""The operator's faults (issue #22) on the local cluster: two replicas, pods whose
readiness churns, the leader killed (-9) or frozen (SIGSTOP) past its election lease. The
readiness history comes from a pod watch (PodTimeline), the consumer's from an etcd watch;
the checker holds them to the bounds. No lease expires here by design: the standby keeps
the leader's leases alive, so a DELETE of a ready pod's key is a violation."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from tests.consumers.timeline import PodTimeline
from tests.e2e.test_ha import follows, goods, leader_pid
from tests.faults.checker import Window, check
from tests.faults.recorders import ConsumerRecorder
from tests.faults.scenario import save_row
from tests.harness import Cluster, KubectlError, wait_for
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
            pods = self.cluster.pods_of_deployment(self.namespace, "goods")
            pod = self._random.choice(pods)
            with contextlib.suppress(KubectlError):  # the pod went away meanwhile
                self.cluster.set_pod_ready(self.namespace, pod.name, not pod.ready)


@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_the_leading_operator(
    cluster: Cluster, namespace: str, pair: list[OperatorProcess], fault: str
) -> None:
    prefix = goods(cluster, namespace, PODS)
    wait_for(lambda: follows(cluster, namespace, prefix), 30, message="registered")
    leader, standby = pair
    timeline = PodTimeline(cluster, namespace).start()
    windows: list[Window] = []
    try:
        with ConsumerRecorder(cluster.etcd_endpoints.split(","), [prefix]) as consumer:
            with Churn(cluster, namespace):
                time.sleep(3)
                start = time.monotonic()
                if fault == "SIGKILL":
                    leader.kill()
                    pair.remove(leader)
                else:
                    leader.signal(signal.SIGSTOP)
                wait_for(
                    lambda: leader_pid(cluster, namespace) == standby.pid, 30, message="takeover"
                )
                if fault == "SIGSTOP":
                    leader.signal(signal.SIGCONT)
                    wait_for(
                        lambda: "stepping down as leader" in leader.tail(200),
                        20,
                        message="step down",
                    )
                windows.append(Window(f"operator leader {fault}", start, time.monotonic()))
                time.sleep(3)
            cluster.scale(namespace, "goods", 0)
            wait_for(lambda: not consumer.view(), 60, message="every key gone")
        wants = timeline.wants(key=lambda pod: prefix + pod, value=lambda ip: f"{ip}:80")
        (window,) = windows
        assert any(window.start <= w.at <= window.end for w in wants), "no churn in the fault"
        report = check(wants, consumer.history(), windows, end=time.monotonic(), resync=RESYNC)
    finally:
        timeline.stop()
    save_row(report, windows, consumer)
    assert report.violations(windows, RESYNC) == []
