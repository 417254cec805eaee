"""Failover (issue #13): two replicas of one owner id over the same pods, as the chart runs
them. The leader is stopped (kill -9, or SIGTERM: a handover), one pod's readiness flips
right after (after a SIGTERM: once the leader resigned, since until then it still writes),
and the failover time runs from the signal to the registry etcd's watch event for that
change, which only the next leader can write (stamped by bench/probe on CLOCK_MONOTONIC,
like every latency here). A fresh replica replaces each one stopped, so two always run;
the leader is stopped 2 s after that standby turned ready, and for SIGTERM once more the
moment it turned ready, as in a rolling upgrade (`Stop`). A DELETE the consumer's watch
sees that no flip asked for is a ready pod's key lost: there must be none.

Also what a standby costs at idle: its CPU and memory, and etcd's request rate with one
replica and with two.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from bench import stats
from bench.procs import Operator
from bench.scenarios import Env, Window, settled
from bench.watcher import ProbeStream, key_watcher

T = TypeVar("T")
PREFIX = "/services/bench/"
SETTLE = 2.0  # a replica's start-up work done before a settled stop
CHANGE_LIMIT = 60.0  # a change not in etcd by then counts as missed


async def until(check: Callable[[], T | None], what: str, limit: float) -> T:
    """Poll `check` until it returns something truthy; TimeoutError after `limit` s."""
    deadline = time.monotonic() + limit
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {limit:g}s")
        await asyncio.sleep(0.05)
    return value


@dataclass(frozen=True)
class Stop:
    """One way to stop the leader: the signal, and how long after the standby turned ready.
    Right away, the standby is still busy with its start-up (the initial pod view just
    came in), as when a rolling upgrade stops the old pod; settled, it measures the
    failover alone."""

    label: str
    signal: signal.Signals
    settle: float


class Replicas:
    """The running replicas of one owner id, each started under a name of its own."""

    def __init__(self, launch: Callable[[str], Operator]) -> None:
        self.launch = launch
        self.running: list[Operator] = []
        self._names = (f"replica-{i}" for i in itertools.count(1))

    def add(self) -> Operator:
        replica = self.launch(next(self._names)).start()
        self.running.append(replica)
        return replica

    def roles(self) -> tuple[Operator, Operator] | None:
        """(leader, standby) once one replica leads and the other is warm: ready (its pod
        view complete) and keeping alive every lease the leader holds."""
        for replica in self.running:
            replica.check_alive()
        leaders = [r for r in self.running if r.leading()]
        if len(leaders) != 1 or len(self.running) != 2:
            return None
        (leader,) = leaders
        (standby,) = (r for r in self.running if r is not leader)
        leases = "etcd_registrar_leases"
        if not standby.ready() or standby.metric(leases) < leader.metric(leases):
            return None
        return leader, standby

    def stop(self) -> None:
        for replica in self.running:
            replica.stop()


async def _idle(env: Env, procs: list[Operator], seconds: float) -> list[dict[str, Any]]:
    """Each process' costs over one idle window (etcd's request rate is everyone's)."""
    for proc in procs:
        await settled(proc)
    windows = [Window(env, p) for p in procs]
    await asyncio.sleep(seconds)
    return [
        w.close() | {"rss_mib": round(p.usage().rss_mib, 1)}
        for w, p in zip(windows, procs, strict=True)
    ]


async def _stop_leader(
    env: Env,
    replicas: Replicas,
    keys: ProbeStream,
    leader_key: ProbeStream,
    how: Stop,
    flip: tuple[str, bool],
) -> dict[str, float | None]:
    """Stop the leader, flip one pod, then replace the stopped replica. Seconds from the
    signal to: the pod change accepted, the next leader's key, the change in etcd (None:
    missed)."""
    leader, _ = await until(replicas.roles, "leader with a warm standby", limit=120)
    await asyncio.sleep(how.settle)
    sig, (pod, ready) = how.signal, flip
    stopped = time.monotonic()
    leader.signal(sig)
    if sig is signal.SIGTERM:  # it commits what it saw until it resigns: flip after that
        await until(lambda: leader_key.first_after("", "D", stopped), "resignation", 30)
    change = await env.pop.set_ready(pod, ready)
    expect = "P" if ready else "D"
    try:
        seen: float | None = await until(
            lambda: keys.first_after(pod, expect, change.sent), f"{expect} of {pod}", CHANGE_LIMIT
        )
        elected = await until(lambda: leader_key.first_after("", "P", stopped), "new leader", 5)
    except TimeoutError as exc:
        print(f"   failover: {exc}")
        seen = elected = None
    await until(lambda: not leader.running, f"exit of {leader.name}", 30)
    replicas.running.remove(leader)
    replicas.add()
    return {
        "accepted_s": change.done - stopped,
        "elected_s": None if elected is None else elected - stopped,
        "change_s": None if seen is None else seen - stopped,
    }


def _flips(names: list[str]) -> Iterator[tuple[str, bool]]:
    """p-0 not ready, p-0 ready, p-1 not ready, ...: both directions, one pod at a time."""
    for name in itertools.cycle(names):
        yield name, False
        yield name, True


def _figures(runs: list[dict[str, float | None]]) -> dict[str, Any]:
    def summary(key: str) -> dict[str, Any]:
        return stats.summary([v for r in runs if (v := r[key]) is not None])

    changes = [r["change_s"] for r in runs]
    return {
        "count": len(runs),
        "change_ms": summary("change_s"),
        "elected_ms": summary("elected_s"),
        "accepted_ms": summary("accepted_s"),
        "missed": changes.count(None),
        "change_s": [None if c is None else round(c, 3) for c in changes],
    }


async def failover(
    env: Env,
    namespace: str,
    owner: str,
    kube_env: Mapping[str, str],
    *,
    kills: int,
    handovers: int,
    idle: float,
) -> dict[str, Any]:
    """Idle costs with one replica, then two; `kills` kill -9 and twice `handovers` SIGTERM
    (settled, rollout) of the leader, one pod flip each; then how many ready pods' keys
    were deleted."""
    n = len(env.pop.names)
    owned = (PREFIX, f"/etcd-registrar/{owner}/")
    env.clean(*owned)
    await env.pop.reset()
    replicas = Replicas(lambda name: Operator(namespace, owner, env.log_dir, kube_env, name))
    flips = _flips(env.pop.names)
    deletes = 0  # the flips' own
    out: dict[str, Any] = {}
    with (
        key_watcher(env.probe, env.etcd, PREFIX) as keys,
        key_watcher(env.probe, env.etcd, f"{owned[1]}leader") as leader_key,
    ):
        since = time.monotonic()
        try:
            first = replicas.add()
            await keys.wait_count(n, limit=max(120, n / 20))
            await until(lambda: first.leading() and first.sweeps() >= 1, "first sweep", 120)
            (out["one_replica_idle"],) = await _idle(env, [first], idle)
            replicas.add()
            leader, standby = await until(replicas.roles, "warm standby", limit=120)
            out["leader_idle"], out["standby_idle"] = await _idle(env, [leader, standby], idle)
            for how, count in (
                (Stop("kill", signal.SIGKILL, SETTLE), kills),
                (Stop("sigterm", signal.SIGTERM, SETTLE), handovers),
                (Stop("rollout", signal.SIGTERM, 0.0), handovers),
            ):
                runs = []
                for _ in range(count):
                    flip = next(flips)
                    run = await _stop_leader(env, replicas, keys, leader_key, how, flip)
                    deletes += not flip[1] and run["change_s"] is not None
                    runs.append(run)
                out[how.label] = _figures(runs)
            # Every other DELETE took a ready pod's key from the consumers.
            out["ready_keys_deleted"] = len(keys.names_since("D", since)) - deletes
        finally:
            replicas.stop()
            env.clean(*owned)
    one, two = (out[k]["etcd_requests_by_method"] for k in ("one_replica_idle", "leader_idle"))
    added = {m: round(two.get(m, 0) - one.get(m, 0), 1) for m in sorted(one.keys() | two.keys())}
    out["standby_etcd_requests_by_method"] = added
    out["standby_etcd_requests_per_s"] = round(sum(added.values()), 1)
    return out
