"""Run the real `etcd-registrar run` as a subprocess (so a test can SIGKILL it) and read etcd."""

from __future__ import annotations

import asyncio
import atexit
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import cast

from etcd_registrar.etcd import Etcd, EtcdConfig, WatchEvent
from tests.harness import Cluster, free_port, wait_for

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

    def start(self) -> OperatorProcess:
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
        wait_for(self.ready, 60, message=f"operator ready (log: {self.log})")
        return self

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited; log:\n{self.tail()}")
        try:
            url = f"http://127.0.0.1:{self.health_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

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


def key_snapshot(endpoints: str, prefix: str) -> tuple[set[str], int]:
    """The keys under `prefix` and the etcd revision they were read at."""

    async def read() -> tuple[set[str], int]:
        etcd = Etcd(EtcdConfig(endpoints=tuple(endpoints.split(",")), timeout=3))
        try:
            kvs, revision = await etcd.get_prefix(prefix, keys_only=True)
            return {kv.key for kv in kvs}, revision
        finally:
            await etcd.close()

    return asyncio.run(read())


def key_counts(
    endpoints: str, prefix: str, since: tuple[set[str], int], quiet: float = 2.0
) -> list[int]:
    """How many keys a consumer watching `prefix` held at each revision since the snapshot
    `since` (first entry: at the snapshot), replayed from etcd's history, so every dip is in
    it however short (the changes of one transaction count together, as a consumer gets
    them). The replay ends once etcd has sent nothing for `quiet` seconds."""

    async def replay() -> list[int]:
        keys, revision = set(since[0]), since[1]
        counts = [len(keys)]
        etcd = Etcd(EtcdConfig(endpoints=tuple(endpoints.split(",")), timeout=3))
        # An async generator (a bare AsyncIterator to its callers): closed below, which
        # cancels the watch call.
        events = cast(AsyncGenerator[WatchEvent], etcd.watch_prefix(prefix, revision + 1))
        try:
            while True:
                try:
                    event = await asyncio.wait_for(anext(events), quiet)
                except TimeoutError:
                    return [*counts, len(keys)]
                if event.revision != revision:
                    counts.append(len(keys))
                    revision = event.revision
                if event.kind == "PUT":
                    keys.add(event.key)
                else:
                    keys.discard(event.key)
        finally:
            await events.aclose()
            await etcd.close()

    return asyncio.run(replay())
