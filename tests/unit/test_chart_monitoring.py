"""The chart's alerts and dashboard read only metrics the operator exports.

Both are plain files in the chart (files/prometheus-rules.yaml, files/dashboard.json) that
the templates embed unchanged, so they are checked here without Helm: a renamed or dropped
metric fails here instead of leaving an alert that can never fire or an empty panel.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from tests.unit.test_docs import CHART, exported_metrics

SERIES = re.compile(r"\betcd_registrar_[a-z0-9_]+")
RULES = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
DASHBOARD = json.loads((CHART / "files" / "dashboard.json").read_text())


def scraped_names() -> set[str]:
    """Every series name a scrape of the operator shows (histograms as their three parts)."""
    names: set[str] = set()
    for name, (kind, _) in exported_metrics().items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def unknown_series(expr: str) -> set[str]:
    named = set(SERIES.findall(expr))
    assert named, f"names no etcd-registrar metric: {expr}"
    return named - scraped_names()


ALERTS: list[dict[str, Any]] = [rule for group in RULES["groups"] for rule in group["rules"]]
TARGETS = [(p["title"], t["expr"]) for p in DASHBOARD["panels"] for t in p["targets"]]


@pytest.mark.parametrize("alert", ALERTS, ids=[a["alert"] for a in ALERTS])
def test_every_alert_reads_exported_metrics(alert: dict[str, Any]) -> None:
    assert not unknown_series(alert["expr"]), alert["expr"]
    assert alert["labels"]["severity"] in {"critical", "warning", "info"}
    assert alert["annotations"]["summary"]


def test_the_documented_alerts_are_all_installed() -> None:
    """docs/metrics.md's alert table and the rules agree on the metric each alert reads."""

    def metrics_of(expr: str) -> frozenset[str]:
        return frozenset(re.sub(r"_bucket$", "", m) for m in SERIES.findall(expr))

    page = (CHART.parents[1] / "docs" / "metrics.md").read_text()
    table = page.split("| alert | expression | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = {metrics_of(row.split("|")[2]) for row in table.splitlines()[2:]}
    assert documented == {metrics_of(a["expr"]) for a in ALERTS}
    assert "sum by (namespace, job) (etcd_registrar_leader) == 0" in {a["expr"] for a in ALERTS}


@pytest.mark.parametrize(("title", "expr"), TARGETS, ids=[f"{t}: {e}" for t, e in TARGETS])
def test_every_panel_reads_exported_metrics(title: str, expr: str) -> None:
    assert not unknown_series(expr), f"{title}: {expr}"


def test_every_panel_follows_the_dashboard_variables() -> None:
    """Each series is scoped to the chosen installation (namespace and job), and each query
    goes to the chosen data source."""
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            for series in re.finditer(r"\betcd_registrar_[a-z0-9_]+(\{[^}]*\})?", target["expr"]):
                assert series[1] == '{namespace="$namespace", job="$job"}', target["expr"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
