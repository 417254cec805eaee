"""Run the consumer programs of tests/consumers and collect the endpoint sets they print.

hack/build-consumers.sh builds them into $ETCD_REGISTRAR_CACHE/consumers-<hash>, where
<hash> covers the Go sources: `binary()` finds the build of exactly these sources. Each
program prints one JSON line per change of one of its views ("sources"):
``{"source": "watch", "endpoints": ["10.0.0.5:80", ...], "details": {...}}``.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.harness import ToolchainMissing, cache_dir

CONSUMERS_DIR = Path(__file__).resolve().parent
BUILD_SCRIPT = "hack/build-consumers.sh"


def source_hash() -> str:
    """The same hash as hack/build-consumers.sh: sha256 over sha256sum's lines
    ("<hex>  ./<path>") of the sorted .go, .mod and .sum files, first 16 hex digits."""
    paths = sorted(
        "./" + p.relative_to(CONSUMERS_DIR).as_posix()
        for p in CONSUMERS_DIR.rglob("*")
        if p.is_file() and p.suffix in (".go", ".mod", ".sum")
    )
    lines = "".join(
        f"{hashlib.sha256((CONSUMERS_DIR / p).read_bytes()).hexdigest()}  {p}\n" for p in paths
    )
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def binary(name: str, build: str | None = None) -> str:
    """The built consumer program `name` (from `build`, e.g. "grpc171", if given);
    ToolchainMissing (naming `make tools`) if absent."""
    built = cache_dir() / f"consumers-{source_hash()}"
    for module in (build,) if build else ("libs", "coredns"):
        path = built / module / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise ToolchainMissing(
        f"consumer program {name!r} is not built for the current tests/consumers sources "
        f"(looked in {built}): run `make tools` ({BUILD_SCRIPT} builds them from the Go "
        "module proxy)"
    )


@dataclass(frozen=True)
class Observation:
    """One printed line: when it was read (time.monotonic) and what it showed."""

    at: float
    source: str
    endpoints: frozenset[str]
    details: Mapping[str, Any] = field(default_factory=dict)


class ConsumerProcess:
    """One consumer program; a thread reads its JSON lines as they come."""

    def __init__(self, name: str, *args: str, build: str | None = None) -> None:
        self.name = name
        self.argv = [binary(name, build), *args]
        self.log = Path(tempfile.mkstemp(prefix=f"consumer-{name}-", suffix=".log")[1])
        self._lock = threading.Lock()
        self._observations: list[Observation] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> ConsumerProcess:
        with self.log.open("a") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,  # a terminal's Ctrl-C reaches only pytest
            )
        atexit.register(self.stop)
        self._reader = threading.Thread(
            target=self._read, args=(self._proc.stdout,), name=f"read-{self.name}", daemon=True
        )
        self._reader.start()
        return self

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        with self.log.open("a") as log:
            for line in stream:
                try:
                    doc = json.loads(line)
                    seen = Observation(
                        time.monotonic(),
                        str(doc["source"]),
                        frozenset(doc["endpoints"]),
                        doc.get("details") or {},
                    )
                except (ValueError, KeyError, TypeError):
                    log.write(f"stdout: {line}")  # not an observation: keep it for the log
                    log.flush()
                    continue
                with self._lock:
                    self._observations.append(seen)

    def observations(self, start: int = 0) -> list[Observation]:
        """Every line read so far, from index `start`."""
        with self._lock:
            return self._observations[start:]

    def latest(self) -> dict[str, Observation]:
        """The last observation of each source."""
        return {o.source: o for o in self.observations()}

    def check_running(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise AssertionError(f"consumer {self.name} exited; log {self.log}:\n{self.tail()}")

    def stop(self) -> None:
        """SIGKILL: the programs hold no state worth a clean exit (go-zero waits 5.5 s)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
