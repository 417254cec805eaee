"""Benchmark (issue #6): how fast pod readiness reaches etcd, what it costs, and how that
compares with a minimal Go controller (the floor) and with self-registration.

    python -m bench.run                  # N = 100, 1000, 5000, 10000 (~15 min on 2 cores)
    python -m bench.run --profile        # and py-spy the operator's churn at 1000 (+1 min)
    python -m bench.run --quick          # one small N, ~1 min: checks the harness works
    python -m bench.run --sizes 5000 --results /tmp/x   # a look at one N; docs/ untouched

For each N: N pods bound to a node no kubelet or kwok manages, made Running and Ready
through the status subresource; then, for the operator and then the floor, on the same
pods and the same seeded transitions: cold start, idle costs, steady churn, bursts down
and up; then N self-registering instances; at one N, two replicas of the operator: their
idle costs and failover times (bench/failover.py). Writes bench/results/<date>.json and
(full runs into bench/results, or --docs) docs/benchmarks.md and docs/benchmark-latency.png.
`make bench` = `python -m bench.run --profile`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import claims, machine, report, schedule
from bench.failover import failover
from bench.kubeapi import KubeApi
from bench.population import NodeKeeper, Population
from bench.procs import Managed, Operator, floor
from bench.scenarios import Env, Subject, churn, run_subject, self_registration
from bench.watcher import key_watcher, pod_watcher
from etcd_registrar.readiness import GATE
from tests.harness import CLUSTER_DIR, REPO_ROOT, Cluster
from tests.operator_process import CRD_FILE

RESULTS = REPO_ROOT / "bench" / "results"
DOCS = REPO_ROOT / "docs"


def build_go() -> dict[str, str]:
    """Build (or reuse) the Go programs; {"floor": path, "selfreg": path, "probe": path}."""
    out = subprocess.run(
        [str(REPO_ROOT / "bench" / "build.sh")], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        sys.exit(f"bench/build.sh failed:\n{out.stderr}")
    return dict(line.split("=", 1) for line in out.stdout.split())


def churn_rate(n: int, rate: float) -> float:
    """`rate` transitions/s, but no pod touched more than once every 4 s on average."""
    return min(rate, n / 4)


def cluster_pids(cluster: Cluster) -> dict[str, int]:
    """The registry etcd's and the API server's PIDs, when the cluster is the local one."""
    names = {"etcd": "etcd-registry", "apiserver": "kube-apiserver"}
    files = {name: CLUSTER_DIR / "pids" / f"{c}.pid" for name, c in names.items()}
    if cluster.external:
        return {}
    return {name: int(f.read_text()) for name, f in files.items() if f.is_file()}


@dataclass(frozen=True)
class Setup:
    """What every size shares."""

    cluster: Cluster
    binaries: dict[str, str]  # floor, selfreg, probe
    args: argparse.Namespace
    logs: Path
    teardown_errors: list[str] = field(default_factory=list)  # reported, never fatal


def subjects(setup: Setup, namespace: str, log_dir: Path) -> list[Subject]:
    """The operator and the floor, as configured for one namespace."""
    cluster, endpoints = setup.cluster, setup.cluster.etcd_endpoints
    owner = f"{namespace}-op"  # only this run's keys and leases are ever cleaned
    return [
        Subject(
            "operator",
            "/services/bench/",
            ("/services/bench/", f"/etcd-registrar/{owner}/"),
            lambda: Operator(namespace, owner, log_dir, cluster.env()),
        ),
        Subject(
            "floor",
            "/floor/bench/",
            ("/floor/bench/",),
            lambda: floor(setup.binaries["floor"], namespace, endpoints, log_dir, cluster.env()),
        ),
    ]


async def measure(setup: Setup, env: Env, namespace: str) -> dict[str, Any]:
    """Everything at one N, once the pods exist."""
    n, args = len(env.pop.names), setup.args
    rate = churn_rate(n, args.churn_rate)
    steps = schedule.churn(env.pop.names, rate, args.churn_seconds)
    result: dict[str, Any] = {"churn_rate_per_s": rate}
    for subject in subjects(setup, namespace, env.log_dir):
        t0 = time.monotonic()
        profile = None
        if subject.name == "operator" and n == args.profile:
            profile = args.results / f"{args.stamp}-profile-{n}.txt"
        result[subject.name] = await run_subject(
            env, subject, steps, idle=args.idle_seconds, profile=profile
        )
        took = time.monotonic() - t0
        print(f"   {subject.name}: {report.one_line(result[subject.name])} ({took:.0f}s)")
    selfreg = await self_registration(env, setup.binaries["selfreg"], n, args.idle_seconds)
    print(f"   selfreg: {selfreg['keepalives_per_s']} keepalives/s, {selfreg['leases']} leases")
    result["selfreg"] = selfreg
    if n == args.failover:
        t0 = time.monotonic()
        result["failover"] = await failover(
            env,
            namespace,
            f"{namespace}-ha",
            setup.cluster.env(),
            kills=args.kills,
            handovers=args.handovers,
            idle=args.idle_seconds,
        )
        took = time.monotonic() - t0
        print(f"   failover: {report.failover_line(result['failover'])} ({took:.0f}s)")
    return result


@contextlib.asynccontextmanager
async def populated(setup: Setup, n: int, name: str, gated: bool = False) -> AsyncIterator[Env]:
    """N pods (`gated`: declaring the readiness gate) in a fresh namespace `name-...`,
    created and ready, watched; removed afterwards. The result gets the creation times and
    the node's longest heartbeat gap."""
    cluster = setup.cluster
    namespace = cluster.create_namespace(name)
    log_dir = setup.logs / name
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"== N={n}{' gated' if gated else ''}: namespace {namespace}")
    async with KubeApi(cluster.kubeconfig, concurrency=setup.args.concurrency) as api:
        keeper = NodeKeeper(cluster.kubeconfig, f"bench-{namespace}")
        pop = Population(api, namespace, keeper.name, n, gated)
        probe = setup.binaries["probe"]
        try:
            await keeper.start()
            with pod_watcher(probe, str(cluster.kubeconfig), namespace) as pods:
                pids = cluster_pids(cluster)
                env = Env(pop, pods, cluster.etcd_endpoints, pids, probe, log_dir)
                created = await pop.create()
                print(f"   pods created and ready: {created}")
                env.result = {"pods": n, "population": created}
                yield env
                env.result["node_heartbeat_max_gap_s"] = round(keeper.max_gap, 1)
                if keeper.max_gap > 30:
                    print(
                        f"   WARNING: node heartbeat gap {keeper.max_gap:.0f}s: pods may "
                        "have been marked not ready behind the benchmark's back"
                    )
        finally:
            # A teardown that fails is reported with the results, never fatal: the sizes
            # measured so far are already written, and the next size uses a fresh namespace.
            try:
                await pop.delete_all()
                await keeper.stop()
            except Exception as exc:
                print(f"   WARNING: teardown of {namespace} failed: {exc}")
                setup.teardown_errors.append(f"{namespace}: {exc}")
            cluster.delete_namespace(namespace)


async def run_size(setup: Setup, n: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Pods for one N in a fresh namespace, measured, then removed."""
    async with populated(setup, n, f"bench-{n}") as env:
        env.result |= await measure(setup, env, env.pop.namespace)
    return env.result, env.raw


async def run_gated(setup: Setup, n: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The time the readiness gate adds to a gated pod's way to Ready (ContainersReady True
    to every gate True), under the churn of the other scenarios, operator only."""
    args = setup.args
    async with populated(setup, n, f"bench-gated-{n}", gated=True) as env:
        operator = subjects(setup, env.pop.namespace, env.log_dir)[0]
        steps = schedule.churn(env.pop.names, churn_rate(n, args.churn_rate), args.churn_seconds)
        env.clean(*operator.owned)
        with key_watcher(env.probe, env.etcd, operator.prefix) as keys:
            proc = operator.launch().start()
            try:
                await keys.wait_count(n, limit=max(120, n / 20))
                env.result["all_gates_true_s"] = round(await all_gates_true(env, proc), 2)
                env.result["churn"] = await churn(env, proc, keys, steps)
            finally:
                proc.stop()
                env.clean(*operator.owned)
        print(f"   gated: {env.result['churn']['containers_ready_to_ready']}")
    return env.result, env.raw


async def all_gates_true(env: Env, proc: Managed, limit: float = 120.0) -> float:
    """Seconds since `proc` started until every pod's readiness gate is True."""
    deadline = time.monotonic() + limit
    while True:
        pods = await env.pop.api.list_pods(env.pop.namespace)
        waiting = sum(1 for p in pods if not gate_true(p))
        if not waiting:
            return time.monotonic() - proc.started
        if time.monotonic() > deadline:
            raise TimeoutError(f"{waiting} pods still wait for their readiness gate")
        proc.check_alive()
        await asyncio.sleep(0.5)


def gate_true(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == GATE and c["status"] == "True" for c in conditions)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run; returns the results document it wrote."""
    started = time.monotonic()
    args.results.mkdir(parents=True, exist_ok=True)
    binaries = build_go()
    cluster = Cluster.ensure_up()
    cluster.kubectl("apply", "-f", str(CRD_FILE))
    logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    print(f"logs in {logs}")
    info = machine.describe(cluster)
    sizes: list[dict[str, Any]] = []
    raw: dict[int, dict[str, list[float]]] = {}
    setup = Setup(cluster, binaries, args, logs)
    out = args.results / f"{args.stamp}.json"
    document: dict[str, Any] = {
        "when": args.started_at.isoformat(timespec="seconds"),
        "quick": args.quick,
        "settings": {
            "churn_seconds": args.churn_seconds,
            "churn_rate": args.churn_rate,
            "idle_seconds": args.idle_seconds,
            "concurrency": args.concurrency,
            "profiled_size": args.profile,
            "failover_size": args.failover,
            "failover_kills": args.kills,
            "failover_handovers": args.handovers,
        },
        "machine": info,
        "sizes": sizes,
        "gated": None,
        "claims": claims.measure(),
        "teardown_errors": setup.teardown_errors,
    }
    for n in [] if args.gated_only else args.sizes:
        result, raw[n] = await run_size(setup, n)
        sizes.append(result)
        # Each size is kept as soon as it is measured: a later size failing loses nothing.
        out.write_text(json.dumps(document | {"partial": True}, indent=2) + "\n")
    if args.gated:
        document["gated"], _ = await run_gated(setup, args.gated)
    info["load_average_end"] = machine.load_average()
    document["duration_s"] = round(time.monotonic() - started)
    out.write_text(json.dumps(document, indent=2) + "\n")
    written = [out]
    if not args.gated_only and (args.docs or (not args.quick and args.results == RESULTS)):
        written += report.write(document, raw, DOCS)
    print(report.markdown(document))
    for path in written:
        print(f"written: {path}")
    return document


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small N, short windows")
    parser.add_argument("--sizes", type=int, nargs="+", help="pod counts")
    parser.add_argument("--churn-seconds", type=float, help="steady churn duration")
    parser.add_argument("--churn-rate", type=float, default=100.0, help="transitions/s")
    parser.add_argument("--idle-seconds", type=float, help="idle/self-registration window")
    parser.add_argument("--concurrency", type=int, default=32, help="API requests in flight")
    parser.add_argument(
        "--docs",
        action="store_true",
        help="write docs/ also in quick mode or with --results elsewhere",
    )
    parser.add_argument(
        "--gated",
        type=int,
        metavar="N",
        help="pods of the readiness-gate scenario (default: 1000, quick: the size; 0: none)",
    )
    parser.add_argument(
        "--gated-only", action="store_true", help="only the readiness-gate scenario"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=-1,
        metavar="N",
        help="py-spy the operator's churn at N pods (default: 1000, else the first size)",
    )
    parser.add_argument(
        "--failover",
        type=int,
        metavar="N",
        help="two replicas, leader stopped, at N pods (default: 1000, else the first size)",
    )
    parser.add_argument("--kills", type=int, help="kill -9 of the leader (default 10, quick 1)")
    parser.add_argument(
        "--handovers",
        type=int,
        help="SIGTERM of the leader, settled and in a rollout (each: default 3, quick 1)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([200] if quick else [100, 1000, 5000, 10000])
    args.churn_seconds = args.churn_seconds or (10.0 if quick else 30.0)
    args.idle_seconds = args.idle_seconds or 10.0
    usual = 1000 if 1000 in args.sizes else args.sizes[0]
    if args.gated is None:
        args.gated = args.sizes[0] if quick else 1000
    if args.profile == -1:
        args.profile = usual
    args.failover = args.failover or usual
    args.kills = (1 if quick else 10) if args.kills is None else args.kills
    args.handovers = (1 if quick else 3) if args.handovers is None else args.handovers
    args.started_at = datetime.now(UTC)
    args.stamp = args.started_at.strftime("%Y-%m-%dT%H%M") + ("-quick" if quick else "")
    return args


def entry(
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, object]],
    parse: Callable[[], argparse.Namespace],
) -> None:
    """A benchmark's command line: progress lines as they come, then the run."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress lines
    asyncio.run(run(parse()))


def main() -> None:
    entry(main_async, parse_args)


if __name__ == "__main__":
    main()
