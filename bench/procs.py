"""The processes under test and what they cost: CPU and memory from /proc, etcd's request
counters from its /metrics, and launchers for the operator, the Go floor and the
self-registration simulator."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from tests.harness import free_port

_TICK = os.sysconf("SC_CLK_TCK")
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$")


@dataclass(frozen=True, slots=True)
class Usage:
    """A process at one moment: CPU seconds used so far, resident and peak memory (MiB)."""

    cpu: float
    rss_mib: float
    hwm_mib: float


def usage(pid: int) -> Usage:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    mib = {k: int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}
    return Usage(cpu, mib["VmRSS"], mib["VmHWM"])


def machine_cpu() -> tuple[int, int, int]:
    """Jiffies since boot over all cores: (busy, stolen by the hypervisor, total)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq, steal, sum(fields[:8])


def scrape(url: str) -> dict[str, float]:
    """A Prometheus text endpoint as {"name{labels}": value}."""
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local endpoint
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            samples[f"{name}{{{labels}}}" if labels else name] = float(value)
    return samples


def etcd_requests(endpoint: str) -> dict[str, float]:
    """gRPC messages etcd received so far, by method (a unary call is one message, each
    keepalive on the LeaseKeepAlive stream is one), plus the leases it renewed."""
    counts: dict[str, float] = {}
    for name, value in scrape(f"{endpoint}/metrics").items():
        if name.startswith("grpc_server_msg_received_total{"):
            method = re.search(r'grpc_method="(\w+)"', name)
            if method and value:
                counts[method.group(1)] = counts.get(method.group(1), 0) + value
    return counts


class Managed:
    """A child process with its output in a log file, stopped by SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: Mapping[str, str]) -> None:
        self.name, self.args, self.env = name, args, dict(env)
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Self:
        with self.log.open("ab") as log:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def usage(self) -> Usage:
        return usage(self.pid)

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited; log {self.log}:\n{self.tail()}")

    async def wait_output(self, marker: str, limit: float) -> str:
        """Wait until a log line starts with `marker`; return that line."""
        deadline = time.monotonic() + limit
        while True:
            self.check_alive()
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith(marker):
                    return line
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {marker!r} after {limit}s ({self.log})")
            await asyncio.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Operator(Managed):
    """`etcd-registrar run` on one namespace, with its metrics and probes on free ports;
    replicas of one owner id (high availability) each have a name of their own."""

    def __init__(
        self,
        namespace: str,
        owner: str,
        log_dir: Path,
        env: Mapping[str, str],
        name: str = "operator",
    ) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        flags = {
            "namespace": namespace,
            "owner-id": owner,  # its own: the benchmark cleans up exactly this owner's leases
            "metrics-port": self.metrics_port,  # the sweep counter says when a sweep is done
            "health-port": self.health_port,
        }
        args = [sys.executable, "-m", "etcd_registrar", "run"]
        args += [arg for flag, value in flags.items() for arg in (f"--{flag}", str(value))]
        super().__init__(name, args, log_dir, env)

    def metric(self, name: str) -> float:
        """One unlabelled sample (0 while the metrics endpoint is not up yet)."""
        try:
            metrics = scrape(f"http://127.0.0.1:{self.metrics_port}/metrics")
        except OSError:
            return 0.0
        return metrics.get(name, 0.0)

    def sweeps(self) -> float:
        """Sweeps completed so far."""
        return self.metric("etcd_registrar_sweeps_total")

    def leading(self) -> bool:
        return self.metric("etcd_registrar_leader") == 1

    def ready(self) -> bool:
        """/readyz: started, etcd reachable, the initial pod view complete."""
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:  # refused while starting; HTTPError (503) while not ready
            return False


def floor(
    binary: str, namespace: str, endpoints: str, log_dir: Path, env: Mapping[str, str]
) -> Managed:
    args = [binary, "-namespace", namespace, "-endpoints", endpoints, "-prefix", "/floor"]
    return Managed("floor", args, log_dir, env)


def selfreg(binary: str, n: int, endpoints: str, log_dir: Path) -> Managed:
    args = [binary, "-n", str(n), "-endpoints", endpoints, "-prefix", "/selfreg/bench"]
    return Managed("selfreg", args, log_dir, os.environ)
