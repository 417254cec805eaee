"""One fault run on the registry etcd (issue #22): the operator's etcd half (the real
Registry: writer, lease pool, keepalive, re-writing lost leases' keys) kept busy by a
scripted pod population that churns, a consumer recording what it sees, fault windows,
then every pod goes away and the checker judges the two histories.

The pods are scripted here, not Kubernetes pods: the etcd faults are about what the
registry does with etcd; the operator's Kubernetes side has its own faults (tests/e2e).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from etcd_registrar.etcd import Etcd, EtcdConfig
from etcd_registrar.registry import Registry
from etcd_registrar.term import Term
from tests.aio import eventually
from tests.faults.checker import Report, Want, Window, check
from tests.faults.recorders import ConsumerRecorder
from tests.harness import EtcdCluster, EtcdServer
from tests.integration.conftest import OWNER
from tests.integration.test_registry import Desired, endpoints
from tests.listeners import Setbacks

PREFIX = "/services/"
PODS = 30
CHURN = 0.1  # seconds between two readiness flips
WRITER_RETRY = 2.0  # the writer's backoff cap (etcd_registrar.writer): its next try


def resync(ttl: int) -> float:
    """The bound's "one resync" here: a lost lease is noticed within a TTL, and the writer
    retries within its backoff cap."""
    return ttl + WRITER_RETRY


class Pods:
    """`PODS` pods of one service whose readiness the test flips; each flip is recorded
    (the readiness history) and handed to the registry the way the controller would."""

    def __init__(self, registry: Registry, ttl: int) -> None:
        self.registry = registry
        self.all = endpoints(PODS, ttl=ttl)
        self.desired = Desired(registry, [])  # re-writes a lost lease's keys of ready pods
        self.wants: list[Want] = []
        self._random = random.Random(22)  # noqa: S311 (a repeatable churn, not crypto)

    def set(self, index: int, ready: bool) -> None:
        pod = self.all[index]
        self.wants.append(Want(time.monotonic(), pod.key, pod.value if ready else None))
        if ready:
            self.desired.by_key[pod.key] = pod
            self.registry.submit([pod], [])
        else:
            self.desired.by_key.pop(pod.key, None)
            self.registry.submit([], [pod.key])

    def expected(self) -> dict[str, str]:
        return {key: pod.value for key, pod in self.desired.by_key.items()}

    async def churn(self) -> None:
        """Flip a random pod every `CHURN` seconds until cancelled."""
        while True:
            index = self._random.randrange(PODS)
            self.set(index, self.all[index].key not in self.desired.by_key)
            await asyncio.sleep(CHURN)


@dataclass
class Run:
    pods: Pods
    consumer: ConsumerRecorder
    windows: list[Window] = field(default_factory=list)
    report: Report | None = None

    @asynccontextmanager
    async def fault(self, name: str, *, expiry: bool = False) -> AsyncIterator[None]:
        """The window of a fault the block causes and undoes."""
        start = time.monotonic()
        yield
        self.windows.append(Window(name, start, time.monotonic(), expiry))


@asynccontextmanager
async def churning(
    registry_endpoints: Sequence[str], consumer_endpoints: Sequence[str], ttl: int
) -> AsyncIterator[Run]:
    """A registry and a consumer on etcd, the pods churning for the block (which causes the
    faults); then churn stops, every pod goes away, and `run.report` is the judgement."""
    config = EtcdConfig(endpoints=tuple(registry_endpoints), timeout=2)
    registry = Registry(Etcd(config), Term.alone(), Setbacks(), owner=OWNER)
    pods = Pods(registry, ttl)
    with ConsumerRecorder(consumer_endpoints, [PREFIX]) as consumer:
        await registry.start()
        run = Run(pods, consumer)
        try:
            for index in range(PODS):
                pods.set(index, ready=index % 2 == 0)
            churn = asyncio.create_task(pods.churn())
            await asyncio.sleep(2)  # steady churn before the first fault
            yield run
            await asyncio.sleep(2)  # and after the last
            churn.cancel()
            for index in range(PODS):
                pods.set(index, ready=False)
            with contextlib.suppress(AssertionError):  # what is left, the checker reports
                await eventually(lambda: not consumer.view(), 3 * resync(ttl), "all keys gone")
        finally:
            await registry.close()
    end = time.monotonic()
    run.report = check(pods.wants, consumer.history(), run.windows, end=end, resync=resync(ttl))


def save_row(
    report: Report, windows: Sequence[Window], consumer: ConsumerRecorder, **extra: object
) -> None:
    """Append a run's numbers to $FAULTS_REPORT (one JSON line), for docs/reliability.md."""
    path = os.environ.get("FAULTS_REPORT")
    if not path:
        return
    row = {
        "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0],
        "windows": {w.name: round(w.end - w.start, 2) for w in windows},
        "overall": report.overall.summary(),
        "per_window": {name: found.summary() for name, found in report.windows.items()},
        "converge_s": report.converge,
        "left_behind": len(report.left_behind),
        "relists": consumer.relists,
        "load": os.getloadavg()[0],
        "nproc": os.cpu_count(),
        **extra,
    }
    with Path(path).open("a") as out:
        out.write(json.dumps(row) + "\n")


def leader(cluster: EtcdCluster) -> EtcdServer:
    """The member that leads the cluster now (from a member's status, over the gateway)."""
    for member in cluster.members:
        url = f"{member.endpoint}/v3/maintenance/status"
        request = urllib.request.Request(url, b"{}")  # noqa: S310 (http://127.0.0.1:port)
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
                status = json.loads(response.read())
        except OSError:
            continue
        if status.get("leader") and status["leader"] == status["header"]["member_id"]:
            return member
    raise AssertionError("no member of the cluster leads")
