"""Turns a results document into docs/benchmarks.md and a latency plot."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

PLOT = "benchmark-latency.png"
Doc = dict[str, Any]


def _get(d: Doc, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _lat(summary: Doc | None, keys: Sequence[str] = ("p50", "p90", "p99", "max")) -> str:
    if not summary or not summary.get("count"):
        return "-"
    return " / ".join(_num(summary.get(k)) for k in keys)


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b <= 0:
        return "-"
    return f"{a / b:.1f}x"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


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


def _churn(sizes: list[Doc]) -> list[str]:
    rows = []
    for s in sizes:
        for who in ("operator", "floor"):
            c = _get(s, who, "churn") or {}
            missed = (_get(c, "register", "missed") or 0) + (_get(c, "deregister", "missed") or 0)
            rows.append(
                [
                    _num(s["pods"]),
                    f"{_num(c.get('achieved_per_s'))} ({_num(c.get('transitions'))})",
                    who,
                    _lat(_get(c, "register", "latency_ms")),
                    _lat(_get(c, "deregister", "latency_ms")),
                    _num(missed),
                    _num(c.get("cpu_seconds_per_1000"), 2),
                    _num(_get(c, "costs", "etcd_requests_per_s")),
                ]
            )
        op = _get(s, "operator", "churn", "register", "latency_ms") or {}
        fl = _get(s, "floor", "churn", "register", "latency_ms") or {}
        opd = _get(s, "operator", "churn", "deregister", "latency_ms") or {}
        fld = _get(s, "floor", "churn", "deregister", "latency_ms") or {}
        rows.append(
            [
                "",
                "",
                "*operator ÷ floor*",
                " / ".join(_ratio(op.get(k), fl.get(k)) for k in ("p50", "p90", "p99", "max")),
                " / ".join(_ratio(opd.get(k), fld.get(k)) for k in ("p50", "p90", "p99", "max")),
                "",
                _ratio(
                    _get(s, "operator", "churn", "cpu_seconds_per_1000"),
                    _get(s, "floor", "churn", "cpu_seconds_per_1000"),
                ),
                "",
            ]
        )
    header = [
        "N",
        "transitions/s (count)",
        "controller",
        "register p50 / p90 / p99 / max ms",
        "deregister p50 / p90 / p99 / max ms",
        "missed",
        "CPU s / 1000 transitions",
        "etcd req/s",
    ]
    return _table(header, rows)


def _bursts(sizes: list[Doc]) -> list[str]:
    rows = []
    for s in sizes:
        for who in ("operator", "floor"):
            for label, key in (("ready", "burst_up"), ("not ready", "burst_down")):
                b = _get(s, who, key) or {}
                rows.append(
                    [
                        _num(s["pods"]),
                        who,
                        label,
                        _num(b.get("status_changes_seconds"), 2),
                        _num(b.get("last_key_after_last_change_s"), 3),
                        _num(b.get("last_key_after_last_pod_event_s"), 3),
                        _lat(b.get("latency_ms"), ("p50", "p99", "max")),
                        _num(b.get("missed")),
                    ]
                )
    header = [
        "N",
        "controller",
        "all pods made",
        "status changes took s",
        "last etcd event after last change s",
        "… after last pod watch event s",
        "per pod p50 / p99 / max ms",
        "missed",
    ]
    return _table(header, rows)


def _pair(a: Doc, b: Doc, *path: str) -> str:
    return f"{_num(_get(a, *path))} / {_num(_get(b, *path))}"


def _cold_and_footprint(sizes: list[Doc]) -> list[str]:
    rows = []
    for s in sizes:
        op, fl = s.get("operator") or {}, s.get("floor") or {}
        rows.append(
            [
                _num(s["pods"]),
                _num(_get(op, "cold_start", "all_keys_s"), 2),
                _num(_get(op, "cold_start", "first_sweep_s"), 2),
                _num(_get(fl, "cold_start", "all_keys_s"), 2),
                _pair(op, fl, "cold_start", "keys_per_s"),
                _ratio(_get(fl, "cold_start", "keys_per_s"), _get(op, "cold_start", "keys_per_s")),
                _pair(op, fl, "memory_mib", "peak"),
                _pair(op, fl, "idle", "cpu_percent"),
                _num(_get(op, "idle", "etcd_requests_per_s")),
                _num(_get(op, "churn", "costs", "etcd_requests_per_s")),
            ]
        )
    header = [
        "N",
        "operator cold start: all keys s",
        "operator: first sweep done s",
        "floor cold start: all keys s",
        "keys/s first→last operator / floor",
        "floor ÷ operator keys/s",
        "peak RSS MiB operator / floor",
        "idle CPU % operator / floor",
        "operator etcd req/s idle",
        "operator etcd req/s churn",
    ]
    return _table(header, rows)


def _selfreg(sizes: list[Doc]) -> list[str]:
    rows = []
    for s in sizes:
        op, sr = _get(s, "operator", "idle") or {}, s.get("selfreg") or {}
        rows.append(
            [
                _num(s["pods"]),
                f"{_num(op.get('leases'))} / {_num(sr.get('leases'))}",
                f"{_num(op.get('keepalives_per_s'))} / {_num(sr.get('keepalives_per_s'))}",
                f"{_num(op.get('etcd_requests_per_s'))} / {_num(sr.get('etcd_requests_per_s'))}",
                f"{_num(op.get('etcd_cpu_percent'))} / {_num(sr.get('etcd_cpu_percent'))}",
                _num(sr.get("etcd_rss_mib"), 0),
            ]
        )
    header = [
        "N endpoints",
        "leases operator / self-reg",
        "keepalives/s operator / self-reg",
        "etcd req/s operator / self-reg",
        "etcd CPU % operator / self-reg",
        "etcd RSS MiB with self-reg",
    ]
    return _table(header, rows)


def _by_pods(sizes: list[Doc], n: int) -> Doc:
    return next((s for s in sizes if s["pods"] == n), {})


def _targets(sizes: list[Doc]) -> list[str]:
    rows: list[list[str]] = []

    def add(target: str, value: Any, ok: Callable[[Any], bool], shown: str) -> None:
        verdict = "-" if value is None else ("yes" if ok(value) else "**no**")
        rows.append([target, shown if value is not None else "not measured", verdict])

    n1k = _by_pods(sizes, 1000)
    for label in ("register", "deregister"):
        lat = _get(n1k, "operator", "churn", label, "latency_ms") or {}
        p50, p99 = lat.get("p50"), lat.get("p99")
        add(f"churn at 1,000 pods, {label}: p50 ≤ 15 ms", p50, lambda v: v <= 15, f"{p50} ms")
        add(f"churn at 1,000 pods, {label}: p99 ≤ 60 ms", p99, lambda v: v <= 60, f"{p99} ms")
    op = _get(n1k, "operator", "churn", "register", "latency_ms", "p50")
    fl = _get(n1k, "floor", "churn", "register", "latency_ms", "p50")
    ratio = op / fl if op is not None and fl else None
    add("within 2x of the Go floor at p50", ratio, lambda v: v <= 2, f"{_ratio(op, fl)}")
    burst = _get(_by_pods(sizes, 5000), "operator", "burst_up", "last_key_after_last_change_s")
    add("5,000 pods ready at once: all keys ≤ 3 s after", burst, lambda v: v <= 3, f"{burst} s")
    n10k = _by_pods(sizes, 10000)
    cold = _get(n10k, "operator", "cold_start", "all_keys_s")
    add("cold start, 10,000 ready pods: all keys ≤ 10 s", cold, lambda v: v <= 10, f"{cold} s")
    rss = _get(n10k, "operator", "memory_mib", "peak")
    add("operator RSS ≤ 150 MB at 10,000 pods", rss, lambda v: v * 1.048576 <= 150, f"{rss} MiB")
    keepalives = [_get(s, "operator", "idle", "keepalives_per_s") for s in sizes]
    known = [k for k in keepalives if k]
    add(
        "keepalives/s independent of the number of pods",
        known if len(known) >= 2 else None,
        lambda v: max(v) <= 1.5 * min(v),
        ", ".join(f"{_num(s['pods'])} pods: {k}/s" for s, k in zip(sizes, keepalives, strict=True)),
    )
    return _table(["target (issue #6)", "result", "met"], rows)


def _profile(sizes: list[Doc]) -> list[str]:
    for s in sizes:
        prof = _get(s, "operator", "profile")
        if prof:
            lines = [
                "## Where the operator's CPU goes",
                "",
                f"py-spy (non-blocking, 100 Hz, active threads only) during a second, "
                f"unmeasured run of the churn at {_num(s['pods'])} pods: {prof['samples']:,} "
                "samples. Own time by line; inclusive time by function, leaving out the "
                "event loop and entry points every sample passes through.",
                "",
            ]
            rows = [
                [own[0], _num(own[1]), inc[0], _num(inc[1])]
                for own, inc in zip(prof["own_percent"], prof["inclusive_percent"], strict=False)
            ]
            return lines + _table(["own time: frame", "%", "inclusive: function", "%"], rows)
    return []


def markdown(doc: Doc) -> str:
    m = doc["machine"]
    sizes = doc["sizes"]
    lines = [
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
        "cores, so everything here includes that contention.",
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
        "## Targets",
        "",
        *_targets(sizes),
        "## Steady churn",
        "",
        "Ready true→false, false→true through the status subresource, graceful deletes "
        "(deletionTimestamp) and re-creations, at a fixed rate for "
        f"{doc['settings']['churn_seconds']:g} s. CPU = the controller's own, including its "
        "background work; etcd req/s = all gRPC messages etcd received (keepalives included).",
        "",
        *_churn(sizes),
        "## Bursts",
        "",
        "Every pod's Ready flipped as fast as the API server takes it "
        f"({doc['settings']['concurrency']} requests in flight). Under that load the API "
        "server's watch lags its responses by up to hundreds of ms; the last column "
        "leaves that lag out (what the controller itself adds after its last event).",
        "",
        *_bursts(sizes),
        "## Cold start and footprint",
        "",
        "Cold start: N ready pods exist, the controller starts; seconds from process start. "
        "Keys/s from the first key to the last is the controllers' throughput.",
        "",
        *_cold_and_footprint(sizes),
        "## Against self-registration",
        "",
        "N endpoints held in etcd, idle: the operator (one lease per 1,000 keys) vs N "
        "instances each with its own lease, client and KeepAlive (`bench/selfreg`).",
        "",
        *_selfreg(sizes),
        *_profile(sizes),
        f"![latency distribution]({PLOT})",
        "",
    ]
    return "\n".join(lines)


def plot(raw: dict[int, dict[str, list[float]]], path: Path) -> bool:
    """CDFs of per-transition latency; False when matplotlib is not installed."""
    try:
        import matplotlib  # optional: the "bench" extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [
        ("churn/register", "steady churn: key put"),
        ("churn/deregister", "steady churn: key deleted"),
        ("burst/register", "burst, all ready: key put"),
        ("burst/deregister", "burst, all not ready: key deleted"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharey=True)
    colors = plt.get_cmap("viridis")
    for ax, (suffix, title) in zip(axes.flat, panels, strict=True):
        for i, n in enumerate(sorted(raw)):
            color = colors(i / max(1, len(raw) - 1))
            for who, style in (("operator", "-"), ("floor", "--")):
                values = sorted(max(v * 1000, 0.1) for v in raw[n].get(f"{who}/{suffix}", []))
                if values:
                    ys = [(j + 1) / len(values) for j in range(len(values))]
                    ax.plot(values, ys, style, color=color, label=f"{who} N={n:,}")
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("status change accepted → etcd event (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("fraction of transitions")
    axes[1][0].set_ylabel("fraction of transitions")
    axes[0][1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(doc: Doc, raw: dict[int, dict[str, list[float]]], docs: Path) -> list[Path]:
    docs.mkdir(exist_ok=True)
    written = [docs / "benchmarks.md"]
    written[0].write_text(markdown(doc))
    if plot(raw, docs / PLOT):
        written.append(docs / PLOT)
    else:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot written")
    return written
