"""The scenarios, run against one controller (the operator or the Go floor) at a time:
cold start, idle footprint, steady churn, bursts; and the self-registration baseline.

Every latency runs from the API server's acceptance of a change (the earlier of: the
response to the benchmark's own request, the pod watch event bench/probe receives) to the
etcd watch event bench/probe receives; all on CLOCK_MONOTONIC (see bench/stats.py).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import stats
from bench.kubeapi import ApiError, Timed
from bench.population import Population
from bench.procs import Managed, Operator, etcd_requests, machine_cpu, selfreg, usage
from bench.profile import Profiler
from bench.schedule import Action, Step
from bench.watcher import ProbeStream, key_watcher


@dataclass
class Env:
    """What every scenario needs: the pods, the registry etcd, the probe, where logs go."""

    pop: Population
    pods: ProbeStream  # the pod watch: when the API server published each change
    etcd: str  # registry etcd client URL
    pids: dict[str, int]  # local cluster processes whose CPU counts: etcd (registry), apiserver
    probe: str
    log_dir: Path
    raw: dict[str, list[float]] = field(default_factory=dict)  # latencies for the plot
    result: dict[str, Any] = field(default_factory=dict)  # what the run at this N found

    def leases(self) -> int:
        out = subprocess.run(
            [self.probe, "leases", "-endpoints", self.etcd],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout)

    def clean(self, *prefixes: str) -> None:
        args = [self.probe, "clean", "-endpoints", self.etcd]
        for p in prefixes:
            args += ["-prefix", p]
        subprocess.run(args, check=True, capture_output=True)


@dataclass(frozen=True)
class Subject:
    """A controller under test: how to start it and where it writes."""

    name: str
    prefix: str  # the keys of the benchmark's service, e.g. /services/bench/
    owned: tuple[str, ...]  # prefixes to revoke and clear after it stopped
    launch: Callable[[], Managed]


async def settled(subject: Managed, *, below: float = 0.05, limit: float = 15.0) -> bool:
    """Wait until the subject's start-up work is over: its CPU use over half a second falls
    below `below` of a core. False if it never did within `limit` seconds (the idle figures
    then include start-up work, and the result says so)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = subject.usage().cpu
        await asyncio.sleep(0.5)
        if subject.usage().cpu - before < below * 0.5:
            return True
    return False


class Window:
    """Costs over a time window: CPU of the subject, the registry etcd and the API server;
    etcd requests by method; how busy the whole machine was (the noise in every number)."""

    def __init__(self, env: Env, subject: Managed) -> None:
        self.env, self.subject = env, subject
        self.t0 = time.monotonic()
        self.requests0 = etcd_requests(env.etcd)
        self.cpu0 = subject.usage().cpu
        self.pid_cpu0 = {name: usage(pid).cpu for name, pid in env.pids.items()}
        self.machine0 = machine_cpu()

    def close(self) -> dict[str, Any]:
        seconds = time.monotonic() - self.t0
        requests = etcd_requests(self.env.etcd)
        by_method = {
            m: round((v - self.requests0.get(m, 0)) / seconds, 1)
            for m, v in sorted(requests.items())
            if v > self.requests0.get(m, 0)
        }
        cpu = self.subject.usage().cpu - self.cpu0
        out: dict[str, Any] = {
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu, 2),
            "cpu_percent": round(100 * cpu / seconds, 1),
            "etcd_requests_per_s": round(sum(by_method.values()), 1),
            "etcd_requests_by_method": by_method,
            "keepalives_per_s": by_method.get("LeaseKeepAlive", 0.0),
        }
        for name, pid in self.env.pids.items():
            used = usage(pid).cpu - self.pid_cpu0[name]
            out[f"{name}_cpu_percent"] = round(100 * used / seconds, 1)
        busy, steal, total = (b - a for a, b in zip(self.machine0, machine_cpu(), strict=True))
        out["machine_busy_percent"] = round(100 * busy / max(total, 1), 1)  # of all cores
        out["machine_steal_percent"] = round(100 * steal / max(total, 1), 1)
        return out


def _burst_figures(
    env: Env, label: str, timed: list[Timed], ready: bool, keys: ProbeStream, wall: float
) -> dict[str, Any]:
    expect, state = ("P", "R") if ready else ("D", "U")
    transitions = [
        stats.Transition(name, expect, state, t.sent, t.done)
        for name, t in zip(env.pop.names, timed, strict=True)
    ]
    samples, skew = stats.accept(transitions, env.pods)
    found, missed = stats.latencies(samples, keys)
    env.raw[label] = found
    last_accepted = max(s.accepted for s in samples)
    watched = [env.pods.first_after(t.pod, t.state, t.sent) for t in transitions]
    last_watched = max((w for w in watched if w is not None), default=last_accepted)
    return {
        "status_changes_seconds": round(wall, 2),
        "last_key_after_last_change_s": round(keys.last_change() - last_accepted, 3),
        "last_key_after_last_pod_event_s": round(keys.last_change() - last_watched, 3),
        "latency_ms": stats.summary(found),
        "missed": missed,
        "pod_watch_minus_response_ms": skew,
    }


async def _apply(pop: Population, step: Step) -> stats.Transition | None:
    try:
        return await _transition(pop, step)
    except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
        print(f"   transition {step} failed: {exc}", flush=True)
        return None


async def _transition(pop: Population, step: Step) -> stats.Transition:
    if step.action is Action.UNREADY:
        t = await pop.set_ready(step.pod, False)
    elif step.action is Action.READY:
        t = await pop.set_ready(step.pod, True)
    elif step.action is Action.TERMINATE:
        t = await pop.terminate(step.pod)
    else:
        t = await pop.recreate(step.pod)
    action = step.action
    return stats.Transition(step.pod, action.expect, action.pod_state, t.sent, t.done)


async def _sweep_times(proc: Operator, start: float, into: list[float]) -> None:
    """Seconds into the churn at which the operator's sweep counter went up (±0.5 s)."""
    seen = proc.sweeps()
    while True:
        await asyncio.sleep(0.5)
        now = proc.sweeps()
        if now > seen:
            into.append(round(time.monotonic() - start, 1))
        seen = now


async def churn(env: Env, proc: Managed, keys: ProbeStream, steps: list[Step]) -> dict[str, Any]:
    window = Window(env, proc)
    start = time.monotonic() + 0.1
    sweeps: list[float] = []
    poller = (
        asyncio.create_task(_sweep_times(proc, start, sweeps))
        if isinstance(proc, Operator)
        else None
    )
    tasks: list[asyncio.Task[stats.Transition | None]] = []
    for step in steps:
        delay = start + step.at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_apply(env.pop, step)))
    done = [t for t in await asyncio.gather(*tasks) if t is not None]
    driven = time.monotonic() - start
    settle_error = None
    try:
        await keys.wait_count(env.pop.expected_keys(), limit=30)
    except TimeoutError as exc:
        settle_error = str(exc)
    samples, skew = stats.accept(done, env.pods)
    costs = window.close()
    if poller is not None:
        poller.cancel()
    out: dict[str, Any] = {
        "transitions": len(samples),
        "failed_requests": len(steps) - len(done),
        "achieved_per_s": round(len(samples) / driven, 1),
    }
    for kind, label in (("P", "register"), ("D", "deregister")):
        timed, missed = stats.timed_latencies([s for s in samples if s.expect == kind], keys)
        found = [seconds for _, seconds in timed]
        env.raw[f"{proc.name}/churn/{label}"] = found
        out[label] = {
            "latency_ms": stats.summary(found),
            "missed": missed,
            "misses": stats.misses(samples, keys, kind),
            "slowest_at_s_ms": stats.slowest(timed, start),
        }
    if env.pop.gated:
        gated = stats.gate_samples(done, env.pods)
        timed, missed = stats.timed_latencies(gated, env.pods)
        found = [seconds for _, seconds in timed]
        env.raw[f"{proc.name}/churn/gate"] = found
        out["containers_ready_to_ready"] = {
            "latency_ms": stats.summary(found),
            "watched_ms": stats.summary(stats.watched_gate_latencies(gated, env.pods)),
            "missed": missed,
            "slowest_at_s_ms": stats.slowest(timed, start),
        }
    api_rtt = stats.summary([t.done - t.sent for t in done])
    out["api_request_ms"] = {"p50": api_rtt.get("p50"), "p99": api_rtt.get("p99")}
    out["pod_watch_minus_response_ms"] = skew
    out["cpu_seconds_per_1000"] = round(1000 * costs["cpu_seconds"] / max(1, len(samples)), 2)
    out["costs"] = costs
    if poller is not None:
        out["operator_sweeps_done_at_s"] = sweeps
    if settle_error:
        out["settle_error"] = settle_error
    return out


async def run_subject(
    env: Env,
    subject: Subject,
    steps: list[Step],
    *,
    idle: float = 10.0,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Cold start, idle, churn and bursts for one controller over the same pods; with
    `profile`, the churn is run once more with py-spy sampling the controller into that
    file (a separate pass: py-spy's own CPU use would skew the measured one)."""
    n = len(env.pop.names)
    env.clean(*subject.owned)
    await env.pop.reset()
    result: dict[str, Any] = {}
    with key_watcher(env.probe, env.etcd, subject.prefix) as watcher:
        proc = subject.launch().start()
        try:
            # Cold start: every pod ready before the controller starts.
            all_keys = await watcher.wait_count(n, limit=max(120, n / 20))
            first_key = watcher.first_change_since(proc.started) or all_keys
            cold: dict[str, Any] = {
                "first_key_s": round(first_key - proc.started, 2),
                "all_keys_s": round(all_keys - proc.started, 2),
                "keys_per_s": round(n / max(all_keys - first_key, 1e-3)),
            }
            if isinstance(proc, Operator):
                while proc.sweeps() < 1:
                    proc.check_alive()
                    await asyncio.sleep(0.05)
                cold["first_sweep_s"] = round(time.monotonic() - proc.started, 2)
            result["cold_start"] = cold
            was_settled = await settled(proc)
            quiet = Window(env, proc)
            await asyncio.sleep(idle)
            result["idle"] = quiet.close() | {"leases": env.leases(), "settled": was_settled}
            result["churn"] = await churn(env, proc, watcher, steps)
            if profile is not None:
                await env.pop.reset()
                await watcher.wait_count(n, limit=120)
                profiler = Profiler(proc.pid, profile, steps[-1].at).start()
                profiled = await churn(env, proc, watcher, steps)
                result["profile"] = profiler.finish() | {"churn_while_profiled": profiled}
            await env.pop.reset()
            await watcher.wait_count(n, limit=120)
            down, wall = await env.pop.burst(False)
            await watcher.wait_count(0, limit=max(60, n / 20))
            result["burst_down"] = _burst_figures(
                env, f"{proc.name}/burst/deregister", down, False, watcher, wall
            )
            up, wall = await env.pop.burst(True)
            await watcher.wait_count(n, limit=max(60, n / 20))
            result["burst_up"] = _burst_figures(
                env, f"{proc.name}/burst/register", up, True, watcher, wall
            )
            final = proc.usage()
            result["memory_mib"] = {"rss": round(final.rss_mib, 1), "peak": round(final.hwm_mib, 1)}
            result["cpu_seconds_total"] = round(final.cpu, 1)
        finally:
            proc.stop()
            env.clean(*subject.owned)
    return result


async def self_registration(env: Env, binary: str, n: int, window: float) -> dict[str, Any]:
    """N instances each holding a lease of their own, as registry libraries do."""
    env.clean("/selfreg/bench/")
    proc = selfreg(binary, n, env.etcd, env.log_dir).start()
    try:
        line = await proc.wait_output("registered", limit=max(60, n / 50))
        was_settled = await settled(proc)
        costs = Window(env, proc)
        await asyncio.sleep(window)
        out = costs.close() | {"leases": env.leases(), "register_s": float(line.split()[2])}
        out["settled"] = was_settled
        out["memory_mib"] = round(proc.usage().rss_mib, 1)
        etcd = env.pids.get("etcd")
        out["etcd_rss_mib"] = round(usage(etcd).rss_mib, 1) if etcd else None
    finally:
        proc.stop()
        env.clean("/selfreg/bench/")
    return out
