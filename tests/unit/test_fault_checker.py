"""The fault matrix's checker (issue #22) on hand-made histories: each bound holds on a clean
history and breaks on the history that violates it."""

from __future__ import annotations

import json

import pytest

from tests.faults.checker import Seen, Want, Window, check
from tests.faults.table import rows

K = "/services/goods/a"
V, V2 = "10.0.0.1:80", "10.0.0.2:80"
RESYNC = 1.0


def put(at: float, value: str = V, prev: str | None = None) -> Seen:
    return Seen(at, K, value, prev)


def delete(at: float, prev: str | None = V) -> Seen:
    return Seen(at, K, None, prev)


def ready(at: float, value: str = V) -> Want:
    return Want(at, K, value)


def gone(at: float) -> Want:
    return Want(at, K, None)


FAULT = Window("etcd frozen", 4.0, 7.0)
EXPIRY = Window("etcd frozen past the TTL", 4.0, 7.0, expiry=True)


@pytest.mark.parametrize(
    ("want", "seen", "windows", "end", "broken"),
    [
        pytest.param([ready(0), gone(5)], [put(0.1), delete(5.1)], [], 9, [], id="clean-churn"),
        pytest.param(
            [ready(0), gone(5)], [put(0.1), delete(8)], [], 9, ["stale"], id="stale-too-long"
        ),
        pytest.param(
            [ready(0), gone(5)], [put(0.1), delete(7.5)], [FAULT], 9, [], id="stale-in-outage"
        ),
        pytest.param(
            [ready(0), gone(5)],
            [put(0.1), delete(11.5)],
            [FAULT],
            12,
            ["stale", "converged"],
            id="stale-past-outage-and-resync",
        ),
        pytest.param([ready(0)], [put(3)], [], 9, ["missing"], id="missing-too-long"),
        pytest.param([ready(4.5)], [put(7.5)], [FAULT], 9, [], id="missing-in-outage"),
        pytest.param(
            [ready(0), ready(2, V2)],
            [put(0.1), put(5, V2, prev=V)],
            [],
            9,
            ["wrong"],
            id="wrong-value",
        ),
        pytest.param(
            [ready(0), gone(2)],
            [put(0.1), delete(2.1), put(4)],
            [],
            9,
            ["stale", "resurrection", "left behind"],
            id="resurrection",
        ),
        pytest.param(
            [ready(0), gone(2), ready(3.9)],
            [put(0.1), delete(2.1), put(4)],
            [],
            9,
            [],
            id="ready-again-is-no-resurrection",
        ),
        pytest.param(
            [ready(0)], [put(0.1), delete(3), put(3.1)], [], 9, ["DELETE"], id="ready-delete"
        ),
        pytest.param(
            [ready(0)],
            [put(0.1), delete(6.9), put(7.05)],
            [EXPIRY],
            9,
            [],
            id="ready-delete-by-designed-expiry",
        ),
        pytest.param(
            [ready(0)],
            [put(0.1), delete(6.9), put(7.05)],
            [FAULT],
            9,
            ["DELETE"],
            id="ready-delete-in-a-fault-without-expiry",
        ),
        pytest.param(
            [ready(0), gone(3.2)],
            [put(0.1), delete(3.0)],
            [],
            9,
            [],
            id="delete-a-moment-before-the-readiness-record",
        ),
        pytest.param([gone(0)], [put(1)], [], 1.5, ["left behind"], id="left-behind"),
        pytest.param([ready(0)], [], [FAULT], 9, ["missing", "converged"], id="never-converged"),
        pytest.param(
            [ready(0)],
            [put(0.1), put(1, V, prev=V2)],
            [],
            9,
            ["watch gap"],
            id="prevkv-contradicts-the-watch",
        ),
    ],
)
def test_bounds(
    want: list[Want], seen: list[Seen], windows: list[Window], end: float, broken: list[str]
) -> None:
    violations = check(want, seen, windows, end=end, resync=RESYNC).violations(windows, RESYNC)
    kinds = sorted({b for b in broken for v in violations if v.startswith(b)})
    assert kinds == sorted(broken), violations
    assert len(violations) >= len(broken)
    assert all(any(v.startswith(b) for b in broken) for v in violations), violations


def test_findings_are_reported_per_window_and_overall() -> None:
    other = Window("member partitioned", 20.0, 22.0)
    want = [ready(0), gone(5), Want(0, "/services/goods/b", V2)]
    seen = [put(0.1), delete(6.5), Seen(0.1, "/services/goods/b", V2)]
    report = check(want, seen, [FAULT, other], end=30, resync=RESYNC)
    assert report.windows[FAULT.name].summary()["stale"] == 1
    assert report.windows[FAULT.name].summary()["stale_max_s"] == pytest.approx(1.5)
    assert report.windows[other.name].summary()["stale"] == 0
    assert report.overall.summary()["missing_max_s"] == pytest.approx(0.1)
    assert report.converge == 0.0


def test_converge_is_measured_from_the_last_fault() -> None:
    report = check([ready(0)], [put(0.1), delete(5), put(8.25)], [FAULT], end=12, resync=2)
    assert report.converge == pytest.approx(1.25)


def test_a_large_history_checks_fast() -> None:
    keys = [f"/services/goods/{i}" for i in range(1000)]
    want = [Want(t, k, None if t % 2 else V) for k in keys for t in range(20)]
    seen = [Seen(t + 0.1, k, None if t % 2 else V) for k in keys for t in range(20)]
    report = check(want, seen, end=25, resync=RESYNC)
    assert report.violations([], RESYNC) == []
    assert len(report.overall.stale) == len(report.overall.missing) == 10_000


def test_a_ready_pods_key_deleted_is_measured_until_it_is_back() -> None:
    report = check([ready(0)], [put(0.1), delete(6.9), put(7.15)], [EXPIRY], end=9)
    assert report.overall.gone_for() == [pytest.approx(0.25)]
    assert report.windows[EXPIRY.name].summary()["ready_deleted_max_s"] == pytest.approx(0.25)


def test_a_report_line_renders_as_table_rows() -> None:
    summary = check([ready(0)], [put(0.1)], end=1).overall.summary()
    line = json.dumps(
        {
            "windows": {"a": 1.0, "b": 2.0},
            "per_window": {"a": summary, "b": summary},
            "converge_s": 0.5,
            "left_behind": 0,
        }
    )
    assert rows([line]) == [
        "| a | 1.0 | 0 (0.00) | 1 (0.10) | 0 | 0 | 0 (0.00) |  |  |",
        "| b | 2.0 | 0 (0.00) | 1 (0.10) | 0 | 0 | 0 (0.00) | 0.50 | 0 |",
    ]
