"""Footprint and scale (issue #23): what one replica and an idle standby cost at N pods.

    python -m bench.footprint --sizes 1000 10000                  # this checkout
    python -m bench.footprint --sizes 1000 --code /tmp/base/operator --code operator
    python -m bench.footprint --sizes 50000 --churn-rate 100      # `make bench-scale`

For each N: N ready pods bound to a node nobody runs (as bench.run makes them), timed, and
the API server's RSS after. Then for each `--code` (a directory holding etcd_registrar,
put first on PYTHONPATH: the same pods measure two versions, interleaved): a leader's
cold start (all keys, first sweep), its peak RSS, its costs idle; with `--churn-rate`,
churn latency while the operator's sweeps run; then a second replica of the same owner
id (the standby) and its costs idle. The operator only: bench.run compares with the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import machine, schedule
from bench.procs import Operator, etcd_requests, usage
from bench.profile import Profiler
from bench.run import RESULTS, Setup, build_go, churn_rate, entry, populated
from bench.scenarios import Env, Window, churn, settled
from bench.watcher import key_watcher
from tests.harness import Cluster
from tests.operator_process import CRD_FILE

PREFIX = "/services/bench/"


def launched(env: Env, cluster: Cluster, code: Path, name: str) -> Operator:
    """`etcd-registrar run` from the package in `code`, over the benchmark's namespace."""
    variables = cluster.env()
    variables["PYTHONPATH"] = os.pathsep.join([str(code), variables.get("PYTHONPATH", "")])
    return Operator(env.pop.namespace, owner(env), env.log_dir, variables, name).start()


def owner(env: Env) -> str:
    return f"{env.pop.namespace}-fp"  # only this run's keys and leases are ever cleaned


async def idle(env: Env, proc: Operator, seconds: float) -> dict[str, Any]:
    """Costs over `seconds` with no pod changing, etcd's requests by method (a sweep's
    among the pings and the election's); a leader's sweeps in it and their length."""
    was_settled = await settled(proc, limit=60)
    window = Window(env, proc)
    sweeps, swept = proc.sweeps(), proc.metric("etcd_registrar_sweep_seconds_total")
    await asyncio.sleep(seconds)
    now, out = proc.usage(), window.close()
    done = proc.sweeps() - sweeps
    out |= {"settled": was_settled, "rss_mib": round(now.rss_mib, 1), "sweeps": done}
    if done:
        per_sweep = proc.metric("etcd_registrar_sweep_seconds_total") - swept
        out["sweep_s"] = round(per_sweep / done, 3)
    return out


async def profiled(proc: Operator, output: Path, seconds: float) -> dict[str, Any]:
    """py-spy's summary of where an idle process spends its CPU (samples taken while it
    runs Python code only: an idle wait is no sample)."""
    profiler = Profiler(proc.pid, output, seconds).start()
    await asyncio.sleep(seconds)
    return profiler.finish(top=20) | {"raw": str(output)}


async def measure(
    env: Env, cluster: Cluster, code: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One version of the operator over the pods: leader, then a standby beside it."""
    n = len(env.pop.names)
    env.clean(f"/etcd-registrar/{owner(env)}/", PREFIX)
    await env.pop.reset()
    result: dict[str, Any] = {"code": str(code)}
    with key_watcher(env.probe, env.etcd, PREFIX) as keys:
        leader = launched(env, cluster, code, "leader")
        standby: Operator | None = None
        try:
            requests = sum(etcd_requests(env.etcd).values())
            all_keys = await keys.wait_count(n, limit=max(120, n / 20))
            while leader.sweeps() < 1:
                leader.check_alive()
                await asyncio.sleep(0.05)
            result["cold_start"] = {
                "all_keys_s": round(all_keys - leader.started, 2),
                "first_sweep_s": round(time.monotonic() - leader.started, 2),
                "etcd_requests": round(sum(etcd_requests(env.etcd).values()) - requests),
                "apiserver_rss_mib": round(usage(env.pids["apiserver"]).rss_mib, 1)
                if "apiserver" in env.pids
                else None,
            }
            result["leader_idle"] = await idle(env, leader, args.idle_seconds)
            if args.profile:  # a pass of its own: py-spy's CPU must not count above
                raw = env.log_dir / f"idle-{code.parent.name}.txt"
                result["leader_idle_profile"] = await profiled(leader, raw, args.idle_seconds)
            if args.churn_rate:
                rate = churn_rate(n, args.churn_rate)
                steps = schedule.churn(env.pop.names, rate, args.churn_seconds)
                result["churn"] = await churn(env, leader, keys, steps)
            standby = launched(env, cluster, code, "standby")
            result["standby_idle"] = await idle(env, standby, args.idle_seconds)
            result["leader_peak_rss_mib"] = round(leader.usage().hwm_mib, 1)
            result["standby_peak_rss_mib"] = round(standby.usage().hwm_mib, 1)
        finally:
            for proc in (standby, leader):
                if proc is not None:
                    proc.stop()
            env.clean(f"/etcd-registrar/{owner(env)}/", PREFIX)
    return result


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cluster = Cluster.ensure_up()
    cluster.kubectl("apply", "-f", str(CRD_FILE))
    logs = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    setup = Setup(cluster, build_go(), args, logs)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M")
    out = args.results / f"{stamp}-footprint.json"
    document: dict[str, Any] = {"machine": machine.describe(cluster), "sizes": []}
    for n in args.sizes:
        started = time.monotonic()
        async with populated(setup, n, f"footprint-{n}") as env:
            size: dict[str, Any] = {
                "pods": n,
                "setup_s": round(time.monotonic() - started, 1),
                "apiserver_rss_mib": round(usage(env.pids["apiserver"]).rss_mib, 1)
                if "apiserver" in env.pids
                else None,
                "runs": [],
            }
            document["sizes"].append(size)
            for _ in range(args.rounds):
                for code in args.code:
                    size["runs"].append(await measure(env, cluster, code, args))
                    out.write_text(json.dumps(document, indent=2) + "\n")  # kept at once
                    print(json.dumps(size["runs"][-1]))
    document["teardown_errors"] = setup.teardown_errors
    document["load_average_end"] = machine.load_average()
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written: {out}")
    return document


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000], help="pod counts")
    parser.add_argument(
        "--code",
        type=Path,
        action="append",
        help="directory holding the etcd_registrar package (repeatable; default: this one)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each --code per size")
    parser.add_argument("--idle-seconds", type=float, default=120.0, help="idle window")
    parser.add_argument("--churn-rate", type=float, default=0.0, help="transitions/s (0: none)")
    parser.add_argument("--churn-seconds", type=float, default=60.0, help="churn duration")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the leader idle (one window more)"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="API requests in flight")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    args.code = [c.resolve() for c in args.code or [Path(__file__).parents[1] / "operator"]]
    return args


def main() -> None:
    entry(main_async, parse_args)


if __name__ == "__main__":
    main()
