"""The benchmark harness itself: its pure parts (schedule, statistics, report, profile
summary) as unit tests, and one tiny end-to-end pass (e2e, ~70 s) that checks every
scenario produces complete, matched results on a real cluster. Not a performance test:
no number is asserted beyond "measured" and "nothing missed"."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import report, schedule, stats
from bench.kubeapi import JSON, KubeApi
from bench.population import State, pod_manifest
from bench.profile import summarise
from bench.run import main_async, parse_args
from tests.harness import Cluster


class FakeStream:
    """Stands in for a ProbeStream: events per name."""

    def __init__(self, events: dict[str, list[tuple[float, str]]]) -> None:
        self.events = events

    def first_after(self, name: str, kind: str, after: float) -> float | None:
        return next((t for t, k in self.events.get(name, []) if k == kind and t >= after), None)


def test_churn_schedule_is_reproducible_and_respects_the_cooldown() -> None:
    pods = [f"p-{i}" for i in range(50)]
    steps = schedule.churn(pods, rate=20, duration=10, cooldown=1.0)
    assert steps == schedule.churn(pods, rate=20, duration=10, cooldown=1.0)
    assert len(steps) == 200
    last: dict[str, float] = {}
    state = dict.fromkeys(pods, State.READY)
    for step in steps:
        assert step.at - last.get(step.pod, -math.inf) >= 1.0 - 1e-9
        last[step.pod] = step.at
        allowed = {
            State.READY: {schedule.Action.UNREADY, schedule.Action.TERMINATE},
            State.UNREADY: {schedule.Action.READY},
            State.TERMINATING: {schedule.Action.RECREATE},
        }[state[step.pod]]
        assert step.action in allowed
        state[step.pod] = step.action.after
    assert {s.action for s in steps} == set(schedule.Action)


def test_summary_uses_nearest_rank_percentiles_in_ms() -> None:
    summary = stats.summary([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert summary == {"count": 100, "p50": 50, "p90": 90, "p99": 99, "max": 100, "mean": 50.5}
    assert stats.summary([]) == {"count": 0}


def test_acceptance_is_the_earlier_of_response_and_pod_event_and_matching_is_bounded() -> None:
    pods = FakeStream({"a": [(1.002, "U"), (2.001, "R")], "b": [(1.5, "U")]})
    transitions = [
        stats.Transition("a", "D", "U", sent=1.000, done=1.004),  # watch event first
        stats.Transition("a", "P", "R", sent=2.000, done=2.000 + 0.0005),  # response first
        stats.Transition("b", "D", "U", sent=1.400, done=1.410),
    ]
    samples, skew = stats.accept(transitions, pods)  # type: ignore[arg-type]
    assert [s.accepted for s in samples] == [1.002, 1.41, 2.0005]
    assert samples[0].until == 2.0005  # when a's next transition was accepted
    keys = FakeStream({"a": [(1.010, "D"), (2.5, "P")], "b": []})
    found, missed = stats.latencies(samples, keys)  # type: ignore[arg-type]
    assert missed == 1  # b's key never went
    assert [round(x, 4) for x in found] == [0.008, 0.4995]
    assert skew["count"] == 3


def test_profile_summary_counts_own_and_inclusive_time() -> None:
    collapsed = "\n".join(
        [
            "main (app.py:1);handle (etcd_registrar/x.py:10);json (json/decoder.py:5) 3",
            "main (app.py:1);handle (etcd_registrar/x.py:12) 1",
        ]
    )
    result = summarise(collapsed)
    assert result["samples"] == 4
    assert result["own_percent"][0] == ["json (json/decoder.py:5)", 75.0]
    inclusive = dict(map(tuple, result["inclusive_percent"]))
    assert "main (app.py)" not in inclusive  # in every sample: the trunk
    assert inclusive["json (json/decoder.py)"] == 75.0


def _result(p50: float) -> dict[str, Any]:
    latency = {"count": 10, "p50": p50, "p90": 2 * p50, "p99": 3 * p50, "max": 4 * p50}
    return {
        "churn": {
            "register": {"latency_ms": latency, "missed": 0},
            "deregister": {"latency_ms": latency, "missed": 0},
            "cpu_seconds_per_1000": 1.0,
        },
        "cold_start": {"all_keys_s": 1.0, "keys_per_s": 100},
        "idle": {"keepalives_per_s": 0.3, "leases": 1},
        "memory_mib": {"peak": 100.0},
    }


def test_report_renders_targets_and_ratios() -> None:
    doc: dict[str, Any] = {
        "when": "2026-01-01T00:00:00+00:00",
        "quick": False,
        "duration_s": 1,
        "settings": {"churn_seconds": 30, "concurrency": 32},
        "machine": dict.fromkeys(
            ["cpu_model", "cores", "ram_gib", "os", "kernel", "python", "kopf", "commit"], "x"
        )
        | dict.fromkeys(["kube_apiserver", "registry_etcd", "go", "load_average_start"], "x"),
        "sizes": [{"pods": 1000, "operator": _result(10.0), "floor": _result(2.0)}],
    }
    stopped: dict[str, Any] = {
        "count": 10,
        "missed": 0,
        "change_ms": {"count": 10, "p50": 5000.0, "p99": 5500.0},
    }
    stopped["change_ms"]["max"] = 5600.0
    stopped["elected_ms"] = {"count": 10, "p50": 4900.0, "max": 5400.0}
    doc["sizes"][0]["failover"] = {"kill": stopped, "ready_keys_deleted": 0}
    text = report.markdown(doc)
    row = "| 1,000 | 5.00 / 5.50 / 5.60 (10, 0) | 4.90 / 5.40 | - (-, -) | - | - (-, -) | - | 0 |"
    assert row in text
    assert "| churn at 1,000 pods, register: p50 ≤ 15 ms | 10.0 ms | yes |" in text
    assert "| within 2x of the Go floor at p50 (churn, 1,000) | 5.0x | **no** |" in text
    assert "| 1,000 | 5.0x / 5.0x / 5.0x / 5.0x |" in text
    assert "Tenancy: the claim check" not in text  # a run without the claim check


def test_report_renders_the_claim_check() -> None:
    row = dict.fromkeys(
        ["key_admitted_us", "key_refused_us", "new_range_us", "range_around_all_us"], 1.5
    )
    text = "\n".join(report.claim_check({"claims": [row | {"claims": 10_000, "scan_us": 900.4}]}))
    assert "| 10,000 | 1.50 | 1.50 | 1.50 | 1.50 | 900 |" in text


@pytest.mark.e2e
def test_a_tiny_run_measures_every_scenario(tmp_path: Path) -> None:
    if shutil.which("go") is None:
        pytest.skip("bench/build.sh needs Go")
    tiny = ["--sizes", "20", "--churn-seconds", "3", "--idle-seconds", "1"]
    tiny += ["--kills", "1", "--handovers", "1"]
    args = parse_args(["--quick", *tiny, "--results", str(tmp_path)])
    doc = asyncio.run(main_async(args))
    assert json.loads(next(tmp_path.glob("*.json")).read_text()) == doc
    (size,) = doc["sizes"]
    for who in ("operator", "floor"):
        result = size[who]
        assert result["cold_start"]["all_keys_s"] > 0
        for label in ("register", "deregister"):
            assert result["churn"][label]["missed"] == 0
            assert result["churn"][label]["latency_ms"]["count"] > 0
        for burst in ("burst_up", "burst_down"):
            assert result[burst]["missed"] == 0
            assert result[burst]["latency_ms"]["count"] == 20
    assert "first_sweep_s" in size["operator"]["cold_start"]
    assert size["selfreg"]["leases"] == 20
    failover = size["failover"]
    for how in ("kill", "sigterm", "rollout"):
        assert failover[how]["missed"] == 0
        assert failover[how]["change_ms"]["count"] == failover[how]["elected_ms"]["count"] == 1
    assert failover["ready_keys_deleted"] == 0
    assert failover["standby_idle"]["rss_mib"] > 0
    gated = doc["gated"]["churn"]["containers_ready_to_ready"]
    assert gated["missed"] == 0 and gated["latency_ms"]["count"] > 0
    assert [row["claims"] for row in doc["claims"]] == [1_000, 10_000]
    assert doc["teardown_errors"] == []


@pytest.mark.e2e
def test_every_pod_is_deleted_a_page_at_a_time() -> None:
    """10,000 pods in one DELETE ran past the API server's timeout (504): pages converge."""
    cluster = Cluster.ensure_up()
    namespace = cluster.create_namespace("bench-pages")

    async def run() -> list[JSON]:
        async with KubeApi(cluster.kubeconfig) as api:
            for i in range(5):
                await api.create_pod(namespace, pod_manifest(f"p{i}", "nowhere"))
            await api.delete_all_pods(namespace, page=2)
            return await api.list_pods(namespace)

    try:
        assert asyncio.run(run()) == []
    finally:
        cluster.delete_namespace(namespace)


def test_the_gate_is_timed_from_containers_ready_to_ready() -> None:
    """A pod readied at 1.0 (response 1.1, watchers see C at 1.05, R at 1.3), taken down at
    2.0, readied again at 3.0 but never Ready before the end: one latency, one missed."""
    pods: Any = FakeStream({"p-0": [(1.05, "C"), (1.3, "R"), (2.02, "U"), (3.02, "C")]})
    transitions = [
        stats.Transition("p-0", "P", "R", 1.0, 1.1),
        stats.Transition("p-0", "D", "U", 2.0, 2.1),
        stats.Transition("p-0", "P", "R", 3.0, 3.1),
    ]
    samples = stats.gate_samples(transitions, pods)
    found, missed = stats.timed_latencies(samples, pods)
    assert [round(seconds, 3) for _, seconds in found] == [0.25] and missed == 1
    assert [round(s, 3) for s in stats.watched_gate_latencies(samples, pods)] == [0.25]


def test_slowest_lists_the_worst_in_time_order() -> None:
    found = [(10.0 + i, i / 1000) for i in range(20)]  # latency grows with time
    assert stats.slowest(found, start=10.0, k=3) == [[17.0, 17.0], [18.0, 18.0], [19.0, 19.0]]


def test_churn_schedule_balances_registrations_and_deregistrations() -> None:
    for n in (100, 10_000):
        steps = schedule.churn([f"p-{i}" for i in range(n)], rate=100, duration=30)
        puts = sum(1 for s in steps if s.action.expect == "P")
        assert 0.4 < puts / len(steps) < 0.5  # the first steps can only take pods down
