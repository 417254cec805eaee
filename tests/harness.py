"""Test harness: real etcd processes and a real Kubernetes cluster, driven from pytest.

Integration tests get private etcd servers they can stop, kill, pause and wipe
(`EtcdServer`). End-to-end tests run against the local cluster of `hack/cluster-up.sh`
(or any cluster given by $KUBECONFIG and $ETCD_REGISTRAR_ETCD_ENDPOINTS) through `Cluster`.
Everything waits on conditions with deadlines (`wait_for`), never on bare sleeps.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import yaml

from tests.pki import Pki

REPO_ROOT = Path(__file__).resolve().parent.parent
HACK_DIR = REPO_ROOT / "hack"
CLUSTER_DIR = REPO_ROOT / ".cluster"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"

T = TypeVar("T")


class ToolchainMissing(RuntimeError):
    """A binary the harness needs is not installed; the message says how to get it."""


class KubectlError(RuntimeError):
    """kubectl failed; carries its stderr so test failures explain themselves."""

    def __init__(self, args: Iterable[str], returncode: int, stderr: str) -> None:
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"kubectl {' '.join(args)} exited {returncode}: {stderr.strip()}")


# --------------------------------------------------------------------------- polling


class Hopeless(AssertionError):
    """Raised by a `wait_for` predicate when waiting longer cannot help."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.1,
    message: str = "condition not met",
) -> T:
    """Poll `predicate` until it returns something truthy and return that value.

    Exceptions raised by the predicate count as "not yet" (the cluster may be mid-change),
    but `Hopeless` (e.g. the operator process exited) fails at once; on timeout the
    AssertionError names the last value or exception seen, so a failure shows what the
    system looked like rather than just that it timed out.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except Hopeless:
            raise
        except Exception as exc:  # the last one is reported below
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (after {timeout:g}s; last seen: {last!r})")
        time.sleep(interval)


def assert_stays(
    predicate: Callable[[], object],
    duration: float,
    interval: float = 0.2,
    message: str = "condition did not hold",
) -> None:
    """Assert `predicate` stays truthy for the whole `duration` (checked every `interval`).

    This is the "nothing flips it back" check: the waiting is the property under test.
    """
    deadline = time.monotonic() + duration
    while True:
        value = predicate()
        if not value:
            raise AssertionError(f"{message} (last seen: {value!r})")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


# --------------------------------------------------------------------------- toolchain


def no_api() -> Any:
    """Credentials for a Kube that must make no call (tests without an API server)."""
    raise AssertionError("this test makes no Kubernetes API call")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def versions() -> dict[str, str]:
    """The pinned tool versions from hack/versions.env (the single source of truth)."""
    result: dict[str, str] = {}
    for line in (HACK_DIR / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            result[key.strip()] = value.strip()
    return result


def cache_dir() -> Path:
    """Where hack/build-tools.sh puts the built binaries ($ETCD_REGISTRAR_CACHE)."""
    env = os.environ.get("ETCD_REGISTRAR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "etcd-registrar"


def k8s_bin_dir() -> Path:
    """Versioned directory with kube-apiserver, kube-controller-manager, ... and kubectl."""
    return cache_dir() / f"k8s-{versions()['K8S_VERSION']}"


def kubectl_path() -> str:
    """The kubectl built with the cluster (no version skew), else the one on PATH."""
    built = k8s_bin_dir() / "kubectl"
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    found = shutil.which("kubectl")
    if found:
        return found
    raise ToolchainMissing(
        "kubectl not found: run `make tools` (builds Kubernetes from the Go module proxy; "
        "needs Go >= 1.21) or put a kubectl on PATH"
    )


def built_etcd_path() -> str | None:
    """The etcd server hack/build-tools.sh built (the version Kubernetes 1.34 ships with),
    or None; lets a test also run against the etcd users run, besides Debian's 3.4."""
    built = cache_dir() / f"etcd-{versions()['ETCD_VERSION']}" / "etcd"
    return str(built) if built.is_file() and os.access(built, os.X_OK) else None


def etcd_path() -> str:
    """The etcd server for EtcdServer: $ETCD_REGISTRAR_ETCD_BIN, else Debian's on PATH."""
    configured = os.environ.get("ETCD_REGISTRAR_ETCD_BIN")
    if configured:
        if not os.access(configured, os.X_OK):
            raise ToolchainMissing(f"ETCD_REGISTRAR_ETCD_BIN={configured} is not executable")
        return configured
    found = shutil.which("etcd")
    if found:
        return found
    raise ToolchainMissing(
        "etcd not found: run `make deps` (installs Debian's etcd-server and etcd-client) "
        "or set ETCD_REGISTRAR_ETCD_BIN to an etcd server binary"
    )


def component_running(name: str) -> bool:
    """Whether the local cluster's component `name` runs (by its PID file, as hack/lib.sh)."""
    try:
        pid = int((CLUSTER_DIR / "pids" / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return False
    return Path(f"/proc/{pid}").exists()


def run_hack_script(name: str, timeout: float, cluster_dir: Path = CLUSTER_DIR) -> None:
    """Run hack/<name> (no arguments) for the cluster whose state is in `cluster_dir`; its
    stderr and the log directory in the error."""
    env = {**os.environ, "ETCD_REGISTRAR_CLUSTER_DIR": str(cluster_dir)}
    proc = subprocess.run(
        [str(HACK_DIR / name)], capture_output=True, text=True, timeout=timeout, check=False,
        env=env,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(
            f"hack/{name} failed ({proc.returncode}); logs in {cluster_dir}/logs\n"
            f"{proc.stderr.strip()}"
        )


# --------------------------------------------------------------------------- etcd


_live_etcds: weakref.WeakSet[EtcdServer] = weakref.WeakSet()


@atexit.register
def _close_live_etcds() -> None:
    # etcd runs in its own session (a terminal's Ctrl-C must not kill it before the test's
    # teardown); this stops any a crashed or interrupted test process left behind.
    for server in list(_live_etcds):
        server.close()


class EtcdServer:
    """A private single-member etcd on free loopback ports, for etcd outage scenarios.

    The data directory survives stop()/kill()/start(), so a restart keeps the keys (and
    lease state) as a real etcd restart would; wipe() simulates losing the data.
    """

    scheme = "http"

    def __init__(
        self,
        base_dir: Path | None = None,
        etcd_bin: str | None = None,
        name: str = "test",
        host: str = "127.0.0.1",
    ) -> None:
        self.binary = etcd_bin or etcd_path()
        self.name = name
        self.host = host  # the loopback address clients reach it on
        # A single member elects itself after one election timeout: 250 ms instead of the
        # default 1 s makes each (re)start in outage tests ~1 s faster on etcd 3.4.
        self.heartbeat_ms, self.election_ms = 50, 250
        self._owns_base_dir = base_dir is None
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="etcd-registrar-etcd-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "etcd.log"
        self.client_port = free_port(host)
        self.peer_port = free_port()
        # What the other members dial (an EtcdCluster puts a PeerNetwork relay here) and the
        # whole membership; by default a cluster of this one member.
        self.advertised_peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.initial_cluster = f"{name}={self.advertised_peer_url}"
        self._proc: subprocess.Popen[bytes] | None = None
        _live_etcds.add(self)

    @property
    def listen_url(self) -> str:
        """Where it takes clients, e.g. http://127.0.0.1:41234."""
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def endpoint(self) -> str:
        """Client URL, as clients are given it (and etcd advertises it)."""
        return self.listen_url

    @property
    def pid(self) -> int | None:
        """PID of the running etcd, None when stopped."""
        return self._proc.pid if self.running else None  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        """True while the process exists (also while paused)."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> Self:
        """Start etcd (a no-op when running) and wait until it answers /health."""
        if not self.running:
            self.launch()
            self.wait_healthy(timeout)
        return self

    def launch(self) -> None:
        """Start the process without waiting: a cluster's member has no leader until a
        quorum of members runs."""
        # Restarting over existing data must say "existing"; a new member says "new".
        state = "existing" if (self.data_dir / "member").exists() else "new"
        args = [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.listen_url}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls=http://127.0.0.1:{self.peer_port}",
            f"--initial-advertise-peer-urls={self.advertised_peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-state={state}",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            "--logger=zap",
            "--log-outputs=stderr",
            *self.extra_args(),
        ]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM; SIGKILL after `timeout`)."""
        if self._proc is None:
            return
        self._signal(signal.SIGCONT)  # a paused etcd cannot handle SIGTERM
        self._signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Crash it (SIGKILL): no graceful shutdown, leases are not revoked."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc = None

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open but nothing answers, like a hang."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze after pause() (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def restart(self, timeout: float = 30.0) -> None:
        """Graceful stop, then start on the same ports and data."""
        self.stop()
        self.start(timeout)

    def wipe(self, timeout: float = 30.0) -> None:
        """Kill, replace the data with an empty directory, start: an etcd that lost its data."""
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.start(timeout)

    def extra_args(self) -> list[str]:
        """More etcd flags (a subclass's TLS or auth settings)."""
        return []

    def open_url(self, url: str) -> Any:
        """GET `url` from this etcd (a subclass with TLS brings its client certificate)."""
        return urllib.request.urlopen(url, timeout=1)  # noqa: S310

    def healthy(self) -> bool:
        """One /health probe (etcd answers {"health":"true"} when it has a leader)."""
        try:
            with self.open_url(f"{self.listen_url}/health") as resp:
                body = json.loads(resp.read() or b"{}")
        except (OSError, ValueError):
            return False
        return str(body.get("health")) == "true"

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until /health is OK; fail early with the log tail if etcd exits."""

        def check() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self._proc.returncode}: {self.log_tail()}")
            return self.healthy()

        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"etcd {self.endpoint} not healthy after {timeout:g}s: {self.log_tail()}"
                )
            time.sleep(0.05)

    def is_leader(self) -> bool:
        """Whether this member leads its cluster now (its own metrics say so)."""
        with self.open_url(f"{self.listen_url}/metrics") as resp:
            return b"\netcd_server_is_leader 1" in resp.read()

    def version(self) -> str:
        """The server version (e.g. "3.4.23"), from its /version endpoint."""
        with urllib.request.urlopen(f"{self.endpoint}/version", timeout=2) as resp:  # noqa: S310
            return str(json.loads(resp.read())["etcdserver"])

    def log_tail(self, lines: int = 20) -> str:
        """Last lines of etcd's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def close(self) -> None:
        """Stop and remove the temporary directory (if this object created it)."""
        self.stop()
        _live_etcds.discard(self)
        if self._owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TlsEtcdServer(EtcdServer):
    """An etcd that takes only TLS clients with a certificate of its CA, and whose own
    certificate names only `address`: the IP address or DNS name in its URL. A DNS name
    must resolve to `host`: under .localhost, gRPC's resolver makes it loopback."""

    scheme = "https"

    def __init__(
        self,
        pki: Pki,
        base_dir: Path | None = None,
        etcd_bin: str | None = None,
        name: str = "test",
        host: str = "127.0.0.1",
        address: str | None = None,
    ) -> None:
        super().__init__(base_dir, etcd_bin, name, host)
        self.pki = pki
        self.address = address or host
        self.trusted = pki.ca  # the CA whose client certificates etcd accepts
        self.client = "root"  # the client certificate of the harness's own requests
        pki.issue(f"server-{name}", "etcd", server=self.address)
        if not (pki.dir / f"{self.client}.crt").exists():
            pki.issue(self.client, self.client)

    @property
    def endpoint(self) -> str:
        return f"https://{self.address}:{self.client_port}"

    def extra_args(self) -> list[str]:
        d = self.pki.dir
        return [f"--cert-file={d / f'server-{self.name}.crt'}",
                f"--key-file={d / f'server-{self.name}.key'}",
                f"--trusted-ca-file={self.trusted}", "--client-cert-auth"]  # fmt: skip

    def open_url(self, url: str) -> Any:
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        # The harness dials the listening IP, which a DNS-named certificate does not name;
        # checking names is the client under test's job.
        context.check_hostname = False
        context.load_cert_chain(
            self.pki.dir / f"{self.client}.crt", self.pki.dir / f"{self.client}.key"
        )
        return urllib.request.urlopen(url, timeout=1, context=context)  # noqa: S310


class PeerNetwork:
    """TCP relays in front of etcd members' peer ports: the network between members, which
    `cut` partitions while every process keeps running.

    Each connection a member opens to another carries its sender's advertised peer URLs in
    the ``X-PeerURLs`` header of its first request (every raft stream, message and snapshot
    does), so a relay tells who dials it. A cut member's raft traffic is dropped both ways:
    it gets no leader, and the others elect one among themselves. What a cut member sends
    without that header (version probes, a lease renewal a follower forwards to its leader
    until it sees it has none) still gets through; nothing reaches it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cut: set[str] = set()
        self._listeners: list[socket.socket] = []
        self._links: list[tuple[str, str, socket.socket, socket.socket]] = []
        self._targets: dict[str, int] = {}

    def relay(self) -> str:
        """A new relay's URL, for a member to advertise; `forward` says where it leads.

        Bound before the members pick their free ports, so none of them can pick its port."""
        listener = socket.create_server(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._listeners.append(listener)
        threading.Thread(target=self._accept, args=(listener, url), daemon=True).start()
        return url

    def forward(self, url: str, port: int) -> None:
        """Send what the relay at `url` receives to 127.0.0.1:`port`."""
        self._targets[url] = port

    def cut(self, url: str) -> None:
        """Partition the member advertising `url` from the others (and drop its links now)."""
        with self._lock:
            self._cut.add(url)
            links = [link for link in self._links if url in (link[0], link[1])]
        for _, _, a, b in links:
            _shut(a)
            _shut(b)

    def heal(self, url: str) -> None:
        with self._lock:
            self._cut.discard(url)

    def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        with self._lock:
            links, self._links = self._links, []
        for _, _, a, b in links:
            _shut(a)
            _shut(b)

    def _accept(self, listener: socket.socket, url: str) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed
                return
            port = self._targets[url]
            threading.Thread(target=self._link, args=(conn, url, port), daemon=True).start()

    def _link(self, conn: socket.socket, url: str, port: int) -> None:
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in head and len(head) < 65536 and (data := conn.recv(4096)):
                head += data
        found = re.search(rb"(?im)^x-peerurls:\s*(\S+)", head)
        sender = found.group(1).decode() if found else ""
        with self._lock:
            if url in self._cut or self._cut & set(sender.split(",")):
                conn.close()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", port))
            except OSError:  # the member is stopped
                conn.close()
                return
            link = (url, sender, conn, upstream)
            self._links.append(link)
        try:
            upstream.sendall(head)
            back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
            back.start()
            _pump(conn, upstream)
            back.join()
        finally:
            with self._lock:
                if link in self._links:
                    self._links.remove(link)
            conn.close()
            upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    _shut(source)
    _shut(sink)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class EtcdCluster:
    """A private etcd cluster of `size` members on loopback, for failover scenarios: stop,
    pause or partition (`PeerNetwork.cut`) one member while the others keep a quorum.
    `make_member(i, directory)` makes the i-th (default: a plain EtcdServer named "m<i>")."""

    def __init__(
        self,
        size: int = 3,
        etcd_bin: str | None = None,
        make_member: Callable[[int, Path], EtcdServer] | None = None,
    ) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="etcd-registrar-cluster-"))
        self.network = PeerNetwork()
        relays = [self.network.relay() for _ in range(size)]
        make = make_member or (lambda i, dir_: EtcdServer(dir_, etcd_bin, name=f"m{i}"))
        self.members = [make(i, self.base_dir / f"m{i}") for i in range(size)]
        for member, relay in zip(self.members, relays, strict=True):
            self.network.forward(relay, member.peer_port)
            member.advertised_peer_url = relay
        initial = ",".join(f"{m.name}={m.advertised_peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for member in self.members:
            if not member.running:
                member.launch()
        for member in self.members:
            member.wait_healthy(timeout)
        return self

    def leader(self) -> EtcdServer:
        """The member that leads now (fails while there is none)."""
        (leader,) = [m for m in self.members if m.running and m.is_leader()]
        return leader

    def partition(self, member: EtcdServer) -> None:
        """Cut `member` off from the others; its process and client port stay up."""
        self.network.cut(member.advertised_peer_url)

    def heal(self, member: EtcdServer) -> None:
        self.network.heal(member.advertised_peer_url)

    def close(self) -> None:
        for member in self.members:
            member.close()
        self.network.close()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- kubernetes


@dataclass(frozen=True)
class PodInfo:
    """What the registry cares about in a pod."""

    name: str
    ip: str | None
    ready: bool
    phase: str
    node: str | None
    terminating: bool
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def serving(self) -> bool:
        """Ready, has an IP and is not being deleted: should be in the registry."""
        return self.ready and bool(self.ip) and not self.terminating

    @classmethod
    def from_object(cls, pod: Mapping[str, Any]) -> PodInfo:
        """Build from a pod as returned by the API (dict form)."""
        meta, status = pod["metadata"], pod.get("status", {})
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        return cls(
            name=meta["name"],
            ip=status.get("podIP"),
            ready=ready,
            phase=status.get("phase", ""),
            node=pod.get("spec", {}).get("nodeName"),
            terminating=meta.get("deletionTimestamp") is not None,
            labels=dict(meta.get("labels") or {}),
        )


def deployment_manifest(
    name: str,
    replicas: int = 3,
    *,
    image: str = PAUSE_IMAGE,
    port: int = 80,
    port_name: str = "http",
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A minimal Deployment; `annotations` go on the pod template (where opt-in lives)."""
    pod_labels = {"app": name, **(labels or {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": dict(annotations or {})},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "ports": [{"name": port_name, "containerPort": port}],
                        }
                    ],
                },
            },
        },
    }


@dataclass
class Cluster:
    """A Kubernetes cluster plus the registry etcd its operator writes to."""

    kubeconfig: Path
    etcd_endpoints: str
    kubectl_bin: str = field(default_factory=kubectl_path)
    external: bool = False

    # ----- lifecycle

    @classmethod
    def ensure_up(cls, timeout: float = 300.0) -> Cluster:
        """Use $KUBECONFIG + $ETCD_REGISTRAR_ETCD_ENDPOINTS when both are set (e.g. kind),
        otherwise start (or reuse) the local cluster with hack/cluster-up.sh."""
        kubeconfig = os.environ.get("KUBECONFIG")
        endpoints = os.environ.get("ETCD_REGISTRAR_ETCD_ENDPOINTS")
        if kubeconfig and endpoints:
            return cls(Path(kubeconfig), endpoints, external=True)
        cls._check_local_toolchain()
        run_hack_script("cluster-up.sh", timeout)
        endpoints_file = CLUSTER_DIR / "etcd-endpoints"
        return cls(CLUSTER_DIR / "kubeconfig", endpoints_file.read_text().strip())

    @classmethod
    @contextlib.contextmanager
    def another(cls, cluster_dir: Path, timeout: float = 300.0) -> Iterator[Cluster]:
        """A second local cluster beside the first, its state in `cluster_dir` (its own API
        server, etcds and kwok on free ports), stopped on exit."""
        cls._check_local_toolchain()
        try:
            run_hack_script("cluster-up.sh", timeout, cluster_dir)
            endpoints = (cluster_dir / "etcd-endpoints").read_text().strip()
            yield cls(cluster_dir / "kubeconfig", endpoints)
        finally:
            run_hack_script("cluster-down.sh", 120, cluster_dir)

    @staticmethod
    def _check_local_toolchain() -> None:
        v = versions()
        k8s = k8s_bin_dir()
        missing = [
            str(p)
            for p in (
                *(k8s / b for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")),
                k8s / "kubectl",
                cache_dir() / f"kwok-{v['KWOK_VERSION']}" / "kwok",
                cache_dir() / f"etcd-{v['ETCD_VERSION']}" / "etcd",
            )
            if not p.is_file()
        ]
        if missing:
            raise ToolchainMissing(
                "the local cluster binaries are not built: run `make tools` (needs Go >= 1.21; it "
                "builds Kubernetes, kwok and etcd from the Go module proxy, 5-15 min once), or "
                "point KUBECONFIG and ETCD_REGISTRAR_ETCD_ENDPOINTS at an existing cluster. "
                f"Missing: {', '.join(missing)}"
            )
        if not shutil.which("etcd"):
            raise ToolchainMissing("etcd not found: run `make deps` (Debian etcd-server)")
        for tool in ("openssl", "curl", "flock"):
            if not shutil.which(tool):
                raise ToolchainMissing(f"{tool} not found: run `make deps`")

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (e.g. the operator) aimed at this cluster."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "ETCD_REGISTRAR_ETCD_ENDPOINTS": self.etcd_endpoints,
        }

    # ----- kubectl

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60.0
    ) -> str:
        """Run kubectl against this cluster and return stdout (KubectlError on failure)."""
        cmd = [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise KubectlError(args, proc.returncode, proc.stderr)
        return proc.stdout

    def get_json(self, *args: str) -> Any:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, manifest: Mapping[str, Any] | str, namespace: str | None = None) -> str:
        """`kubectl apply` a dict or a YAML string (may hold several documents)."""
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(dict(manifest))
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=text)

    def credentials(self) -> Callable[[], Any]:
        """How the operator logs in to this cluster (kube.login with its kubeconfig)."""
        from etcd_registrar import kube

        return functools.partial(kube.login, self.kubeconfig)

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient for this cluster (for tests that prefer the client)."""
        from kubernetes import config  # imported here: keeps the harness import light

        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig)
        )

    # ----- namespaces

    def create_namespace(self, prefix: str = "test") -> str:
        """A fresh namespace with a random suffix, ready for pods (its ServiceAccount exists)."""
        base = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40].strip("-") or "test"
        name = f"{base}-{secrets.token_hex(3)}"
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"etcd-registrar.io/test": "true"}},
            }
        )
        # Pod creation is refused until the controller manager made the "default"
        # ServiceAccount, and the ReplicaSet controller then backs off for seconds.
        wait_for(
            lambda: self.kubectl("get", "serviceaccount", "default", "-n", name, check=False),
            timeout=30,
            interval=0.05,
            message=f"namespace {name}: default ServiceAccount never appeared",
        )
        return name

    def delete_namespace(self, name: str) -> None:
        """Start deleting a namespace; do not wait for it to go."""
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")

    # ----- deployments and pods

    def create_deployment(
        self, namespace: str, manifest: Mapping[str, Any] | str
    ) -> dict[str, Any]:
        """Apply a Deployment (dict from deployment_manifest() or YAML) and return it."""
        self.apply(manifest, namespace)
        doc = yaml.safe_load(manifest) if isinstance(manifest, str) else manifest
        result: dict[str, Any] = self.get_json(
            "deployment", doc["metadata"]["name"], "-n", namespace
        )
        return result

    def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        """Set a Deployment's replica count."""
        self.kubectl("scale", "-n", namespace, f"deployment/{deployment}", f"--replicas={replicas}")

    def pods_of_deployment(self, namespace: str, deployment: str) -> list[PodInfo]:
        """All pods matching the Deployment's selector (terminating ones included, flagged)."""
        dep = self.get_json("deployment", deployment, "-n", namespace)
        labels = dep["spec"]["selector"].get("matchLabels", {})
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self.get_json("pods", "-n", namespace, "-l", selector)["items"]
        return sorted((PodInfo.from_object(p) for p in pods), key=lambda p: p.name)

    def wait_deployment_serving(
        self, namespace: str, deployment: str, replicas: int, timeout: float = 60.0
    ) -> list[PodInfo]:
        """Wait until the Deployment has exactly `replicas` pods, all Running and Ready with
        distinct IPs, and no terminating leftovers; return them."""

        def settled() -> list[PodInfo] | None:
            pods = self.pods_of_deployment(namespace, deployment)
            ips = {p.ip for p in pods}
            ok = (
                len(pods) == replicas
                and all(p.serving and p.phase == "Running" for p in pods)
                and len(ips) == replicas
            )
            return pods if ok else None

        return wait_for(
            settled,
            timeout,
            interval=0.2,
            message=f"deployment {namespace}/{deployment}: {replicas} serving pods",
        )

    def get_pod(self, namespace: str, pod: str) -> PodInfo:
        """One pod's current state."""
        return PodInfo.from_object(self.get_json("pod", pod, "-n", namespace))

    def set_pod_ready(self, namespace: str, pod: str, ready: bool) -> None:
        """Set the pod's Ready condition through the status subresource, as a kubelet would
        when a readiness probe fails or recovers (kwok does not undo it)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = "True" if ready else "False"
        # Strategic merge keyed on condition type: replaces just the Ready entry.
        patch = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": status,
                        "lastTransitionTime": now,
                        "reason": "" if ready else "ReadinessProbeFailed",
                    }
                ]
            }
        }
        self.kubectl(
            "patch",
            "pod",
            pod,
            "-n",
            namespace,
            "--subresource=status",
            "--type=strategic",
            "-p",
            json.dumps(patch),
        )

    # ----- service accounts (to run the operator with its own RBAC)

    def create_token(self, namespace: str, service_account: str, duration: str = "1h") -> str:
        """A bound ServiceAccount token from the TokenRequest API."""
        return self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={duration}"
        ).strip()

    def write_service_account_kubeconfig(
        self, namespace: str, service_account: str, dest: Path, duration: str = "1h"
    ) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount (same server and CA)."""
        admin = yaml.safe_load(self.kubeconfig.read_text())
        ctx_name = admin["current-context"]
        ctx = next(c["context"] for c in admin["contexts"] if c["name"] == ctx_name)
        cluster = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [
                {
                    "name": service_account,
                    "user": {"token": self.create_token(namespace, service_account, duration)},
                }
            ],
            "contexts": [
                {
                    "name": "sa",
                    "context": {
                        "cluster": cluster["name"],
                        "user": service_account,
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "sa",
        }
        dest.write_text(yaml.safe_dump(config))
        dest.chmod(0o600)
        return dest
