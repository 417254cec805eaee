"""Where the numbers come from: the machine, the versions, how busy the machine was."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.harness import REPO_ROOT, Cluster


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _first(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[-1].split("=", 1)[-1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def _run(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def describe(cluster: Cluster) -> dict[str, Any]:
    mem_kib = int(_first("/proc/meminfo", "MemTotal").split()[0])
    with urllib.request.urlopen(  # noqa: S310 - the local registry etcd
        f"{cluster.etcd_endpoints.split(',')[0]}/version", timeout=5
    ) as response:
        etcd_version = json.loads(response.read())["etcdserver"]
    server = json.loads(cluster.kubectl("version", "-o", "json")).get("serverVersion", {})
    return {
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "os": _first("/etc/os-release", "PRETTY_NAME"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kopf": metadata.version("kopf"),
        "etcd_registrar": metadata.version("etcd-registrar"),
        "commit": _run("git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"),
        "registry_etcd": etcd_version,
        "kube_apiserver": server.get("gitVersion", "unknown"),
        "go": _run("go", "env", "GOVERSION"),
        "load_average_start": load_average(),
    }
