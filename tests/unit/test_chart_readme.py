"""The chart's README is what hack/chart-readme.py writes from Chart.yaml and the Helm values
table of docs/configuration.md (itself checked against values.yaml by test_docs.py)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.unit.test_docs import REPO_ROOT


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chart_readme", REPO_ROOT / "hack" / "chart-readme.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_readme_is_generated_from_the_values() -> None:
    readme = generator()
    assert readme.README.read_text() == readme.render(), (
        "charts/etcd-registrar/README.md is stale: run hack/chart-readme.py"
    )
