"""Turns a results document into docs/benchmarks.md (and the plot, see bench/plot.py).

Every table is a list of columns, each a header and a function from a row to its cell.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench import claims, plot

Doc = dict[str, Any]
Column = tuple[str, Callable[[Doc], str]]
WHO = ("operator", "floor")


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _lat(summary: Any, keys: Sequence[str] = ("p50", "p90", "p99", "max")) -> str:
    if not summary or summary.get("count") == 0 or summary.get(keys[0]) is None:
        return "-"
    return " / ".join(_num(summary.get(k)) for k in keys)


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b <= 0:
        return "-"
    return f"{a / b:.1f}x"


def _ratios(op: Any, fl: Any, keys: Sequence[str] = ("p50", "p90", "p99", "max")) -> str:
    return " / ".join(_ratio(_get(op, k), _get(fl, k)) for k in keys)


def _table(columns: Sequence[Column], rows: Iterable[Doc]) -> list[str]:
    lines = [
        "| " + " | ".join(header for header, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows]
    return [*lines, ""]


def _per_controller(sizes: list[Doc]) -> list[Doc]:
    """One row per (N, controller): {"n": N, "who": name, **that controller's results}."""
    return [{"n": s["pods"], "who": who, **(s.get(who) or {})} for s in sizes for who in WHO]


def one_line(r: Doc) -> str:
    """A progress line for one controller at one N."""
    reg = _get(r, "churn", "register", "latency_ms") or {}
    dereg = _get(r, "churn", "deregister", "latency_ms") or {}
    return (
        f"churn p50/p99 register {reg.get('p50')}/{reg.get('p99')} ms, "
        f"deregister {dereg.get('p50')}/{dereg.get('p99')} ms; "
        f"burst last key +{_get(r, 'burst_up', 'last_key_after_last_change_s')} s; "
        f"cold start {_get(r, 'cold_start', 'all_keys_s')} s; "
        f"peak RSS {_get(r, 'memory_mib', 'peak')} MiB"
    )


def _seconds(summary: Any, keys: Sequence[str] = ("p50", "p99", "max")) -> str:
    """A summary in ms, shown in seconds."""
    if not summary or not summary.get("count"):
        return "-"
    return " / ".join(f"{summary[k] / 1000:.2f}" for k in keys)


def failover_line(f: Doc) -> str:
    """A progress line for the failover scenario."""
    return (
        f"kill -9 p50/max {_seconds(_get(f, 'kill', 'change_ms'), ('p50', 'max'))} s, "
        f"SIGTERM {_seconds(_get(f, 'sigterm', 'change_ms'), ('p50', 'max'))} s, "
        f"ready keys deleted {f.get('ready_keys_deleted')}, "
        f"standby CPU {_get(f, 'standby_idle', 'cpu_percent')} %, "
        f"+{f.get('standby_etcd_requests_per_s')} etcd req/s"
    )


CHURN: list[Column] = [
    ("N", lambda r: _num(r["n"])),
    ("controller", lambda r: r["who"]),
    (
        "transitions/s (count)",
        lambda r: (
            f"{_num(_get(r, 'churn', 'achieved_per_s'))} ({_num(_get(r, 'churn', 'transitions'))})"
        ),
    ),
    (
        "register p50 / p90 / p99 / max ms",
        lambda r: _lat(_get(r, "churn", "register", "latency_ms")),
    ),
    (
        "deregister p50 / p90 / p99 / max ms",
        lambda r: _lat(_get(r, "churn", "deregister", "latency_ms")),
    ),
    (
        "missed",
        lambda r: _num(
            (_get(r, "churn", "register", "missed") or 0)
            + (_get(r, "churn", "deregister", "missed") or 0)
        ),
    ),
    ("CPU s / 1000 transitions", lambda r: _num(_get(r, "churn", "cpu_seconds_per_1000"), 2)),
    ("etcd req/s", lambda r: _num(_get(r, "churn", "costs", "etcd_requests_per_s"))),
    ("API server CPU %", lambda r: _num(_get(r, "churn", "costs", "apiserver_cpu_percent"))),
    (
        "API request p50 / p99 ms",
        lambda r: _lat(_get(r, "churn", "api_request_ms"), ("p50", "p99")),
    ),
    ("machine busy %", lambda r: _num(_get(r, "churn", "costs", "machine_busy_percent"))),
]


def _vs(s: Doc, *path: str) -> tuple[Any, Any]:
    return _get(s, "operator", *path), _get(s, "floor", *path)


RATIOS: list[Column] = [
    ("N", lambda s: _num(s["pods"])),
    (
        "churn register p50 / p90 / p99 / max",
        lambda s: _ratios(*_vs(s, "churn", "register", "latency_ms")),
    ),
    (
        "churn deregister p50 / p90 / p99 / max",
        lambda s: _ratios(*_vs(s, "churn", "deregister", "latency_ms")),
    ),
    ("churn CPU per transition", lambda s: _ratio(*_vs(s, "churn", "cpu_seconds_per_1000"))),
    (
        "burst: last key after last change",
        lambda s: _ratio(*_vs(s, "burst_up", "last_key_after_last_change_s")),
    ),
    ("cold start: all keys", lambda s: _ratio(*_vs(s, "cold_start", "all_keys_s"))),
    (
        "throughput: floor keys/s ÷ operator keys/s (cold start)",
        lambda s: _ratio(*reversed(_vs(s, "cold_start", "keys_per_s"))),
    ),
]

BURSTS: list[Column] = [
    ("N", lambda r: _num(r["n"])),
    ("controller", lambda r: r["who"]),
    ("all pods made", lambda r: r["direction"]),
    ("status changes took s", lambda r: _num(_get(r, "burst", "status_changes_seconds"), 2)),
    (
        "last etcd event after last change s",
        lambda r: _num(_get(r, "burst", "last_key_after_last_change_s"), 3),
    ),
    (
        "… after last pod watch event s",
        lambda r: _num(_get(r, "burst", "last_key_after_last_pod_event_s"), 3),
    ),
    (
        "per pod p50 / p99 / max ms",
        lambda r: _lat(_get(r, "burst", "latency_ms"), ("p50", "p99", "max")),
    ),
    ("missed", lambda r: _num(_get(r, "burst", "missed"))),
]

COLD: list[Column] = [
    ("N", lambda r: _num(r["n"])),
    ("controller", lambda r: r["who"]),
    ("cold start: first key s", lambda r: _num(_get(r, "cold_start", "first_key_s"), 2)),
    ("all keys s", lambda r: _num(_get(r, "cold_start", "all_keys_s"), 2)),
    ("first sweep done s", lambda r: _num(_get(r, "cold_start", "first_sweep_s"), 2)),
    ("keys/s first→last", lambda r: _num(_get(r, "cold_start", "keys_per_s"))),
    ("peak RSS MiB", lambda r: _num(_get(r, "memory_mib", "peak"))),
    ("idle CPU %", lambda r: _num(_get(r, "idle", "cpu_percent"))),
    ("etcd req/s idle", lambda r: _num(_get(r, "idle", "etcd_requests_per_s"))),
]


def _stopped(how: str, label: str) -> list[Column]:
    """Columns for the leader stopped one way: the change in etcd, the next leader."""
    return [
        (
            f"{label}: change in etcd after, p50 / p99 / max s (runs, missed)",
            lambda f: (
                f"{_seconds(_get(f, how, 'change_ms'))} ({_num(_get(f, how, 'count'))}, "
                f"{_num(_get(f, how, 'missed'))})"
            ),
        ),
        (
            f"{label}: next leader elected after, p50 / max s",
            lambda f: _seconds(_get(f, how, "elected_ms"), ("p50", "max")),
        ),
    ]


FAILOVER: list[Column] = [
    ("N", lambda f: _num(f["n"])),
    *_stopped("kill", "kill -9"),
    *_stopped("sigterm", "SIGTERM"),
    *_stopped("rollout", "SIGTERM as the standby turns ready"),
    ("ready pods' keys deleted", lambda f: _num(f.get("ready_keys_deleted"))),
]

STANDBY: list[Column] = [
    ("N", lambda f: _num(f["n"])),
    ("standby CPU %", lambda f: _num(_get(f, "standby_idle", "cpu_percent"))),
    ("standby RSS MiB", lambda f: _num(_get(f, "standby_idle", "rss_mib"))),
    (
        "leader CPU % alone / with a standby",
        lambda f: _pair(f.get("one_replica_idle"), f.get("leader_idle"), "cpu_percent"),
    ),
    (
        "etcd req/s one replica / two",
        lambda f: _pair(f.get("one_replica_idle"), f.get("leader_idle"), "etcd_requests_per_s"),
    ),
    ("etcd req/s the standby adds", lambda f: _num(f.get("standby_etcd_requests_per_s"))),
    (
        "etcd CPU % one replica / two",
        lambda f: _pair(f.get("one_replica_idle"), f.get("leader_idle"), "etcd_cpu_percent"),
    ),
]


def _failover(sizes: list[Doc]) -> list[str]:
    rows = [{"n": s["pods"], **s["failover"]} for s in sizes if s.get("failover")]
    if not rows:
        return []
    by_method = rows[0].get("standby_etcd_requests_by_method") or {}
    return [
        "## Failover (high availability, issue #13)",
        "",
        "Two replicas of one owner id over N ready pods. The leader is stopped (kill -9, or "
        "SIGTERM: a handover), one pod's Ready flips through the status subresource right "
        "after (alternately to false and back; after a SIGTERM, once the leader deleted its "
        "key, since until then it still writes what it sees), and the time runs from the "
        "signal to the registry etcd's watch event for that change, which only the next "
        "leader can write. The leader is stopped 2 s after the fresh standby turned ready "
        "(settled), or for SIGTERM also the moment it turned ready, as a rolling upgrade "
        "does (its start-up work is then still under way). "
        "A fresh replica replaces each stopped one, so two always run. Ready pods' keys "
        "deleted = every DELETE a consumer's watch on the prefix saw over the whole scenario "
        "except the flips' own (must be 0). With few samples p99 is the maximum. The same "
        "two shared cores run the cluster, both replicas and the benchmark.",
        "",
        *_table(FAILOVER, rows),
        "Idle, the same pods: a standby's own CPU and memory, and etcd's request rate "
        "(every client's) with one replica and with two. What the standby adds, by gRPC "
        f"method: {', '.join(f'{m} {v}/s' for m, v in by_method.items()) or '-'}.",
        "",
        *_table(STANDBY, rows),
    ]


def _pair(op: Any, sr: Any, key: str) -> str:
    return f"{_num(_get(op, key))} / {_num(_get(sr, key))}"


SELFREG: list[Column] = [
    ("N endpoints", lambda s: _num(s["pods"])),
    (
        "leases operator / self-reg",
        lambda s: _pair(_get(s, "operator", "idle"), s.get("selfreg"), "leases"),
    ),
    (
        "keepalives/s operator / self-reg",
        lambda s: _pair(_get(s, "operator", "idle"), s.get("selfreg"), "keepalives_per_s"),
    ),
    (
        "etcd req/s operator / self-reg",
        lambda s: _pair(_get(s, "operator", "idle"), s.get("selfreg"), "etcd_requests_per_s"),
    ),
    (
        "etcd CPU % operator / self-reg",
        lambda s: _pair(_get(s, "operator", "idle"), s.get("selfreg"), "etcd_cpu_percent"),
    ),
    ("etcd RSS MiB with self-reg", lambda s: _num(_get(s, "selfreg", "etcd_rss_mib"), 0)),
    ("self-reg: all registered s", lambda s: _num(_get(s, "selfreg", "register_s"), 2)),
]


def _targets(sizes: list[Doc]) -> list[str]:
    by_n = {s["pods"]: s for s in sizes}
    rows: list[Doc] = []

    def add(target: str, value: Any, ok: Callable[[Any], bool], shown: str) -> None:
        verdict = "-" if value is None else ("yes" if ok(value) else "**no**")
        rows.append(
            {"t": target, "v": shown if value is not None else "not measured", "ok": verdict}
        )

    for label in ("register", "deregister"):
        lat = _get(by_n.get(1000), "operator", "churn", label, "latency_ms") or {}
        p50, p99 = lat.get("p50"), lat.get("p99")
        add(f"churn at 1,000 pods, {label}: p50 ≤ 15 ms", p50, lambda v: v <= 15, f"{p50} ms")
        add(f"churn at 1,000 pods, {label}: p99 ≤ 60 ms", p99, lambda v: v <= 60, f"{p99} ms")
    op, fl = _vs(by_n.get(1000) or {}, "churn", "register", "latency_ms", "p50")
    ratio = op / fl if op is not None and fl else None
    add("within 2x of the Go floor at p50 (churn, 1,000)", ratio, lambda v: v <= 2, _ratio(op, fl))
    burst = _get(by_n.get(5000), "operator", "burst_up", "last_key_after_last_change_s")
    add("5,000 pods ready at once: all keys ≤ 3 s after", burst, lambda v: v <= 3, f"{burst} s")
    cold = _get(by_n.get(10000), "operator", "cold_start", "all_keys_s")
    add("cold start, 10,000 ready pods: all keys ≤ 10 s", cold, lambda v: v <= 10, f"{cold} s")
    rss = _get(by_n.get(10000), "operator", "memory_mib", "peak")
    add("operator RSS ≤ 150 MB at 10,000 pods", rss, lambda v: v * 1.048576 <= 150, f"{rss} MiB")
    keepalives = [_get(s, "operator", "idle", "keepalives_per_s") for s in sizes]
    known = [k for k in keepalives if k]
    add(
        "keepalives/s independent of the number of pods",
        known if len(known) >= 2 else None,
        lambda v: max(v) <= 1.5 * min(v),
        ", ".join(f"{_num(s['pods'])}: {k}/s" for s, k in zip(sizes, keepalives, strict=True)),
    )
    columns: list[Column] = [
        ("target (issue #6)", lambda r: r["t"]),
        ("result", lambda r: r["v"]),
        ("met", lambda r: r["ok"]),
    ]
    return _table(columns, rows)


def _profile(sizes: list[Doc]) -> list[str]:
    for s in sizes:
        prof = _get(s, "operator", "profile")
        if prof:
            rows = [
                {"own": own, "inc": inc}
                for own, inc in zip(prof["own_percent"], prof["inclusive_percent"], strict=False)
            ]
            columns: list[Column] = [
                ("own time: line", lambda r: f"`{r['own'][0]}`"),
                ("%", lambda r: _num(r["own"][1])),
                ("inclusive: function", lambda r: f"`{r['inc'][0]}`"),
                ("% ", lambda r: _num(r["inc"][1])),
            ]
            return [
                "## Where the operator's CPU goes",
                "",
                "py-spy (non-blocking, 100 Hz, active threads only) during a second, "
                f"unmeasured run of the churn at {_num(s['pods'])} pods: {prof['samples']:,} "
                "samples. Own time by line; inclusive time by function, leaving out the "
                "event loop and entry points every sample passes through.",
                "",
                *_table(columns, rows),
            ]
    return []


def _intro(doc: Doc) -> list[str]:
    m = doc["machine"]
    return [
        "# Benchmark results",
        "",
        f"Run {doc['when']} ({'quick' if doc['quick'] else 'full'}, {doc['duration_s']} s) "
        f"with `python -m bench.run`; raw results in `bench/results/`. Commit {m['commit']}.",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}, "
        f"kernel {m['kernel']}; Python {m['python']}, kopf {m['kopf']}, kube-apiserver "
        f"{m['kube_apiserver']}, registry etcd {m['registry_etcd']}, {m['go']}. "
        f"Load average at start {m['load_average_start']}, at end {m.get('load_average_end')}: "
        "the API server, both etcds, the controller under test and the benchmark share the "
        "cores (and other work ran on the machine), so every number includes that contention.",
        "",
        "How it is measured (details in the docstrings of `bench/`): latency runs from the "
        "API server's acceptance of a change to the registry etcd's watch event for it, "
        "as received by `bench/probe` (Go). Acceptance is the earlier of two moments that "
        "both follow the commit: the response to the benchmark's own request (status PATCH "
        "or DELETE) and the pod watch event `bench/probe` receives (as the controllers do). "
        "One clock, CLOCK_MONOTONIC, for all. The operator and the floor (`bench/floor`: "
        "client-go informer + workqueue + clientv3, nothing else) run one after the other "
        "on the same pods, driven through the same seeded transitions.",
        "",
        *(f"Teardown failed (reported, not fatal): {e}" for e in doc.get("teardown_errors", [])),
    ]


def gated(doc: Doc) -> list[str]:
    """The readiness-gate scenario: what the gate adds to a gated pod's way to Ready."""
    g = doc.get("gated")
    if not g:
        return []
    churn = g["churn"]
    added = churn["containers_ready_to_ready"]
    return [
        "## Readiness gate",
        "",
        f"{_num(g['pods'])} pods declaring the readiness gate, the same churn "
        f"({_num(churn['achieved_per_s'])} transitions/s). Added time to Ready = from the "
        "API server accepting ContainersReady=True to the pod's `etcd-registrar.io/registered` "
        "condition turning True, i.e. key committed in etcd, then the condition patched "
        "(a kubelet then sets Ready on its next sync); the second row leaves out the API "
        "server's lag in publishing the ContainersReady change (pod watch minus response: "
        f"p50 / p99 {_lat(churn['pod_watch_minus_response_ms'], ('p50', 'p99'))} ms), which "
        "the operator's own pod watch waits for too. At start, every gate was True "
        f"{_num(g['all_gates_true_s'])} s after the operator started.",
        "",
        "| ms | p50 / p90 / p99 / max | missed |",
        "|---|---|---|",
        f"| ContainersReady → gate True | {_lat(added['latency_ms'])} | {added['missed']} |",
        f"| the same, as a pod watcher sees both | {_lat(added['watched_ms'])} | |",
        f"| pod event → key in etcd | {_lat(churn['register']['latency_ms'])} "
        f"| {churn['register']['missed']} |",
        "",
    ]


def claim_check(doc: Doc) -> list[str]:
    """The tenancy check of every key against the claimed ranges (issue #19)."""
    rows = doc.get("claims")
    if not rows:
        return []
    return [
        "## Tenancy: the claim check",
        "",
        "Per call, in process, each claimed range a namespace's own; the best of 5 timings. "
        "Sorted ranges and one look-up per key segment keep it flat as claims grow; the last "
        "column is a scan of every claim, for scale.",
        "",
        *claims.table(rows),
        "",
    ]


def markdown(doc: Doc) -> str:
    sizes, settings = doc["sizes"], doc["settings"]
    if not sizes:  # a run of the readiness-gate scenario alone (--gated-only)
        return "\n".join(gated(doc))
    bursts = [
        r | {"direction": label, "burst": r.get(key)}
        for r in _per_controller(sizes)
        for label, key in (("ready", "burst_up"), ("not ready", "burst_down"))
    ]
    lines = [
        *_intro(doc),
        "## Targets",
        "",
        *_targets(sizes),
        "## Steady churn",
        "",
        "Ready true→false, false→true through the status subresource, graceful deletes "
        "(deletionTimestamp) and re-creations, at a fixed rate for "
        f"{settings['churn_seconds']:g} s. CPU = the controller's own, including its "
        "background work; etcd req/s = all gRPC messages etcd received (keepalives included). "
        "The last three columns are the noise gauges: the API server's CPU (% of one core), "
        "how long the benchmark's own requests took, and how busy the whole machine was "
        "(% of all cores, everything included).",
        "",
        *_table(CHURN, _per_controller(sizes)),
        "## Operator ÷ floor",
        "",
        "Same transitions, same pods, same machine; 1.0x = as fast/cheap as the floor.",
        "",
        *_table(RATIOS, sizes),
        "## Bursts",
        "",
        "Every pod's Ready flipped as fast as the API server takes it "
        f"({settings['concurrency']} requests in flight). Under that load the API server's "
        "watch lags its responses by up to hundreds of ms; the column after the last etcd "
        "event leaves that lag out (what the controller adds after its last pod event).",
        "",
        *_table(BURSTS, bursts),
        "## Cold start and footprint",
        "",
        "Cold start: N ready pods exist, the controller starts; seconds from process start. "
        "Keys/s from the first key to the last is the controller's throughput.",
        "",
        *_table(COLD, _per_controller(sizes)),
        "## Against self-registration",
        "",
        "N endpoints held in etcd, idle: the operator (one lease per 1,000 keys) vs N "
        "instances each with its own lease, client and KeepAlive (`bench/selfreg`).",
        "",
        *_table(SELFREG, sizes),
        *_failover(sizes),
        *_profile(sizes),
        *gated(doc),
        *claim_check(doc),
        f"![latency distribution]({plot.FILE})",
        "",
    ]
    return "\n".join(lines)


# What follows this line in docs/benchmarks.md is written by hand from other runs (e.g.
# bench.footprint's) and kept when a run rewrites the rest.
KEPT = "<!-- written by hand from other runs; bench.report keeps what follows -->"


def kept(path: Path) -> str:
    """The part of an existing page a rewrite keeps (from the KEPT line on), or ''."""
    text = path.read_text() if path.is_file() else ""
    return "".join(text.partition(KEPT)[1:])


def write(doc: Doc, raw: dict[int, dict[str, list[float]]], docs: Path) -> list[Path]:
    docs.mkdir(exist_ok=True)
    written = [docs / "benchmarks.md"]
    written[0].write_text(markdown(doc) + kept(written[0]))
    if plot.cdfs(raw, docs / plot.FILE):
        written.append(docs / plot.FILE)
    else:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot written")
    return written


def main() -> None:
    """`python -m bench.report RESULTS.json`: rewrite docs/benchmarks.md from a results file
    (the plot needs the raw latencies of a run and is left as it is)."""
    doc = json.loads(Path(sys.argv[1]).read_text())
    out = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    out.write_text(markdown(doc) + kept(out))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
