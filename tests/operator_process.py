"""Run the real `etcd-registrar run` as a subprocess (so a test can SIGKILL it) and read etcd."""

from __future__ import annotations

import asyncio
import atexit
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

from etcd_registrar.etcd import Etcd, EtcdConfig, WatchEvent
from tests.harness import Cluster, Hopeless, free_port, wait_for

CRD_FILE = (
    Path(__file__).resolve().parents[1] / "crds" / "serviceregistrations.etcd-registrar.io.yaml"
)


def registry_keys(endpoints: str, prefix: str) -> dict[str, str]:
    """What a consumer's prefix get sees right now."""

    async def read() -> dict[str, str]:
        etcd = Etcd(EtcdConfig(endpoints=tuple(endpoints.split(",")), timeout=3))
        try:
            kvs, _ = await etcd.get_prefix(prefix)
            return {kv.key: kv.value for kv in kvs}
        finally:
            await etcd.close()

    return asyncio.run(read())


def delete_key(endpoints: str, key: str) -> None:
    async def delete() -> None:
        etcd = Etcd(EtcdConfig(endpoints=tuple(endpoints.split(","))))
        try:
            await etcd.delete(key)
        finally:
            await etcd.close()

    asyncio.run(delete())


class OperatorProcess:
    """One operator, scoped to one namespace, with its own owner id."""

    def __init__(self, cluster: Cluster, namespace: str, *extra: str) -> None:
        self.cluster, self.namespace, self.extra = cluster, namespace, extra
        self.health_port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="operator-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> OperatorProcess:
        """Start it; with `wait`, until /readyz answers 200."""
        args = [
            sys.executable,
            "-m",
            "etcd_registrar",
            "run",
            "--namespace",
            self.namespace,
            "--owner-id",
            self.namespace,
            "--metrics-port",
            "0",
            "--health-port",
            str(self.health_port),
            *self.extra,
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, env=self.cluster.env(), stdout=log, stderr=log)
        atexit.register(self.kill)  # never leave an operator behind a failed test run
        if wait:
            wait_for(self.ready, 60, message=f"operator ready (log: {self.log})")
        return self

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise Hopeless(f"operator exited; log:\n{self.tail()}")
        try:
            url = f"http://127.0.0.1:{self.health_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as when a node dies."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class ConsumerWatch:
    """What a consumer sees: every event under a prefix, from a watch in a thread."""

    def __init__(self, endpoints: str, prefix: str) -> None:
        self.endpoints, self.prefix = endpoints, prefix
        self.events: list[WatchEvent] = []
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ConsumerWatch:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        started.result(10)
        return self

    async def _start(self) -> None:
        etcd = Etcd(EtcdConfig(endpoints=tuple(self.endpoints.split(","))))
        _, revision = await etcd.get_prefix(self.prefix)

        async def follow() -> None:
            async for event in etcd.watch_prefix(self.prefix, revision + 1):
                self.events.append(event)

        self._task = asyncio.create_task(follow())

    def deletes(self) -> list[str]:
        return [e.key for e in self.events if e.kind == "DELETE"]

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._loop.call_soon_threadsafe(self._loop.stop)
