"""The reference pages in docs/ cannot drift from what they describe.

Each reference table is read back and compared with its source: operator settings with
`Settings` (flag, environment variable, default, limits), Helm values with values.yaml and
values.schema.json (every key, every default), metrics with what `etcd_registrar.metrics`
exports, annotations with the annotation names and the operator's own refusal messages, and
ServiceRegistration fields with the generated CRD (fields, defaults, limits, CEL messages).
A renamed flag, a new Helm value or metric, a changed default or limit fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import etcd_registrar
from etcd_registrar import crd, metrics
from etcd_registrar.config import Settings
from etcd_registrar.model import (
    ServiceRegistrationSpec,
    ServiceRegistrationStatus,
    parse_pod_annotations,
)
from etcd_registrar.source import ServiceId

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs"
CHART = REPO_ROOT / "charts" / "etcd-registrar"
NONE = "—"  # how a table shows "no default"

Row = list[str]


# --------------------------------------------------------------------------- markdown


def section(page: str, heading: str) -> str:
    """The text under `## heading` in docs/`page`, up to the next heading of any level."""
    text = (DOCS / page).read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
    assert match, f"docs/{page} has no '## {heading}' section"
    return match[1]


def rows(text: str) -> list[Row]:
    """The body rows of every table in `text`, as stripped cells (header and rule dropped)."""
    out: list[Row] = []
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line.strip())
            continue
        for body in block[2:]:
            cells = re.split(r"(?<!\\)\|", body[1:-1] if body.endswith("|") else body[1:])
            out.append([c.strip().replace("\\|", "|") for c in cells])
        block = []
    return out


def code(cell: str) -> str:
    """The one code span a key cell holds: "`--etcd-ca`" -> "--etcd-ca"."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"expected a single `code` cell, got {cell!r}"
    return match[1]


def spans(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def keyed(table: list[Row]) -> dict[str, Row]:
    result: dict[str, Row] = {}
    for row in table:
        key = code(row[0])
        assert key not in result, f"{key} is documented twice"
        result[key] = row
    return result


def assert_same_keys(documented: set[str], actual: set[str], what: str) -> None:
    missing, stale = sorted(actual - documented), sorted(documented - actual)
    assert not missing and not stale, f"{what}: undocumented {missing}; no longer exist {stale}"


def constraints(schema: dict[str, Any]) -> Iterator[str]:
    """How a row must show the limits of a JSON/OpenAPI schema node (and its anyOf branches)."""
    for branch in [schema, *schema.get("anyOf", [])]:
        for key in ("pattern", "minimum", "maximum", "minLength", "maxLength"):
            if key in branch:
                yield str(branch[key])
        if "exclusiveMinimum" in branch:
            yield f"> {branch['exclusiveMinimum']}"
        yield from (str(v) for v in branch.get("enum", []))


# --------------------------------------------------------------------------- configuration


def shown_setting(value: object) -> str:
    """A Settings default as the page shows it."""
    if value is None or value == []:
        return NONE
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, list):
        text = ",".join(str(v) for v in value)
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    return f"`{text}`"


def shown_value(value: object) -> str:
    """A Helm value default as the page shows it: JSON, as values.yaml has it."""
    return f"`{json.dumps(value, separators=(', ', ': '))}`"


MISSING = object()


def helm_values() -> dict[str, object]:
    """Every Helm value the chart accepts, by dotted key, with its values.yaml default (or
    MISSING). The schema says where a value ends: an object it lists properties for is a
    group (recursed into); anything else, free-form maps included, is one value."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    found: dict[str, object] = {}

    def walk(node: dict[str, Any], given: object, path: str) -> None:
        given_map = given if isinstance(given, dict) else {}
        unknown = set(given_map) - set(node["properties"])
        assert not unknown, f"values.yaml keys missing from values.schema.json: {unknown}"
        for name, sub in node["properties"].items():
            key = f"{path}{name}"
            value = given_map.get(name, MISSING)
            if "properties" in sub:
                walk(sub, value, f"{key}.")
            else:
                found[key] = value

    walk(schema, defaults, "")
    del found["global"]  # Helm's own (parent charts pass it down); not a setting of this chart
    return found


def test_configuration_lists_every_setting() -> None:
    documented = keyed(rows(section("configuration.md", "Operator settings")))
    flags = {"--" + name.replace("_", "-"): name for name in Settings.model_fields}
    assert_same_keys(set(documented), set(flags), "operator settings")
    helm = helm_values()
    properties = Settings.model_json_schema()["properties"]
    for flag, name in flags.items():
        _, env, default, helm_cell, meaning = documented[flag]
        field = Settings.model_fields[name]
        assert code(env) == f"ETCD_REGISTRAR_{name.upper()}", flag
        assert default == shown_setting(field.default), f"{flag}: default"
        for key in spans(helm_cell):
            assert key in helm, f"{flag}: Helm value {key} does not exist"
        for limit in constraints(properties[name]):
            assert limit in meaning, f"{flag}: the limit {limit!r} is not stated"


def test_configuration_lists_every_helm_value() -> None:
    documented = keyed(rows(section("configuration.md", "Helm values")))
    values = helm_values()
    assert_same_keys(set(documented), set(values), "Helm values")
    for key, default in values.items():
        expected = NONE if default is MISSING else shown_value(default)
        assert documented[key][1] == expected, f"{key}: default"


# --------------------------------------------------------------------------- metrics


def exported_metrics() -> dict[str, tuple[str, list[str]]]:
    """name -> (type, label names) of every metric the operator exports, as scraped names
    (counters with `_total`); gauges computed at scrape time included."""
    found: dict[str, tuple[str, list[str]]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            family = next(iter(obj.describe()))
            name = family.name + ("_total" if family.type == "counter" else "")
            found[name] = (family.type, list(obj._labelnames))
    # The gauges computed at scrape time, registered with sample state to be collected.
    metrics.watch_state(lambda: {ServiceId("shop", "goods"): 1}, lambda: True)
    for family in prometheus_client.REGISTRY.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        if name.startswith("etcd_registrar_") and name not in found:
            labels = {k for sample in family.samples for k in sample.labels}
            found[name] = (family.type, sorted(labels))
    return found


def test_metrics_page_lists_exactly_the_exported_metrics() -> None:
    documented = keyed(rows(section("metrics.md", "Metrics")))
    exported = exported_metrics()
    assert_same_keys(set(documented), set(exported), "metrics")
    for name, (kind, labels) in exported.items():
        _, doc_kind, doc_labels, _ = documented[name]
        assert doc_kind == kind, f"{name}: type"
        assert sorted(spans(doc_labels)) == sorted(labels), f"{name}: labels"


# --------------------------------------------------------------------------- annotations


def test_annotations_page_lists_every_annotation() -> None:
    documented = keyed(rows(section("annotations.md", "Annotations")))
    names = {v for k, v in vars(etcd_registrar).items() if k.startswith("ANNOTATION_")}
    assert_same_keys(set(documented), names, "annotations")


REFUSALS = rows(section("annotations.md", "Refused values"))


@pytest.mark.parametrize("row", REFUSALS, ids=[code(r[1]) for r in REFUSALS])
def test_documented_refusal_is_the_operators_message(row: Row) -> None:
    annotation, value, message = (code(cell) for cell in row)
    with pytest.raises(ValueError) as refused:
        parse_pod_annotations({annotation: value})
    assert str(refused.value) == message


def test_annotations_page_shows_refusals() -> None:
    assert len(REFUSALS) >= 5


# --------------------------------------------------------------------------- CRD


def test_crd_page_lists_every_spec_field_with_defaults_and_limits() -> None:
    documented = keyed(rows(section("crd.md", "spec")))
    schema = crd.spec_schema()["properties"]
    fields = {f.alias or n: f for n, f in ServiceRegistrationSpec.model_fields.items()}
    assert_same_keys(set(documented), set(fields), "spec fields")
    assert set(schema) == set(fields)
    for name, field in fields.items():
        _, default, rules, _ = documented[name]
        if field.default is not None:
            assert default == shown_setting(field.default), f"spec.{name}: default"
        for limit in constraints(schema[name]):
            assert limit in rules, f"spec.{name}: the limit {limit!r} is not stated"
        for rule in schema[name].get("x-kubernetes-validations", []):
            assert rule["message"] in rules, f"spec.{name}: CEL message not quoted"


def test_crd_page_lists_every_status_field() -> None:
    documented = keyed(rows(section("crd.md", "status")))
    fields = {f.alias or n for n, f in ServiceRegistrationStatus.model_fields.items()}
    assert_same_keys(set(documented), fields, "status fields")
