"""The reference pages in docs/ cannot drift from what they describe.

Each reference table is read back and compared with its source: operator settings with
`Settings` (flag, environment variable, default, limits), Helm values with values.yaml and
values.schema.json (every key, every default), metrics with what `etcd_registrar.metrics`
exports and the label values the code passes, annotations with the annotation names and the
operator's own refusal messages, ServiceRegistration fields with the generated CRD (fields,
defaults, limits, CEL messages), the probe answers with what `Health` says, and doctor's
fixes with doctor's. Every `etcd-registrar` command line shown in the docs goes through the
argument parser, and no file cites a DESIGN.md the repository does not have.
A renamed flag, a new Helm value or metric, a changed default, limit or message fails here.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import shlex
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import etcd_registrar
from etcd_registrar import crd, doctor, metrics
from etcd_registrar.candidacy import Candidate, judge
from etcd_registrar.cli import build_parser
from etcd_registrar.config import Settings
from etcd_registrar.etcd import _snake
from etcd_registrar.health import EtcdCheck, Health
from etcd_registrar.model import (
    ServiceRegistrationSpec,
    ServiceRegistrationStatus,
    parse_pod_annotations,
)
from etcd_registrar.source import ServiceId
from etcd_registrar.supervisor import CRASH_LIMIT, Loop

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs"
OPERATOR = REPO_ROOT / "operator" / "etcd_registrar"
PAGES = [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
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
        for key in ("pattern", "minimum", "maximum", "minLength", "maxLength", "maxItems"):
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


def scraped(metric: MetricWrapperBase) -> str:
    """A metric's name as scraped (counters with `_total`)."""
    family = next(iter(metric.describe()))
    return family.name + ("_total" if family.type == "counter" else "")


def exported_metrics() -> dict[str, tuple[str, list[str]]]:
    """name -> (type, label names) of every metric the operator exports, as scraped names
    (counters with `_total`); gauges computed at scrape time included."""
    found: dict[str, tuple[str, list[str]]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            found[scraped(obj)] = (next(iter(obj.describe())).type, list(obj._labelnames))
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


def calls(module: str = "*") -> Iterator[ast.Call]:
    """Every call in the operator's source (of one module, or all)."""
    for path in sorted(OPERATOR.glob(f"{module}.py")):
        yield from (n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call))


def literal(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def literals(node: ast.expr) -> set[str]:
    """The strings an argument can be: a literal, or either literal of `a if c else b`."""
    if isinstance(node, ast.IfExp):
        return literals(node.body) | literals(node.orelse)
    value = literal(node)
    return {value} if value else set()


def label_values_in_code() -> dict[str, set[str]]:
    """Scraped metric name -> the label values the code passes as literals, e.g.
    `metrics.writes_refused.labels("taken")`; etcd's `operation` label and the loop names,
    which the code passes as variables, are followed to where they are written."""
    found: dict[str, set[str]] = defaultdict(set)
    for call in calls():
        func = call.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "labels"
            and isinstance(func.value, ast.Attribute)
            and isinstance(func.value.value, ast.Name)
            and func.value.value.id == "metrics"
        ):
            metric = getattr(metrics, func.value.attr)
            found[scraped(metric)] |= {v for arg in call.args for v in literals(arg)}
        elif isinstance(func, ast.Name) and func.id == "Loop" and (name := literal(call.args[0])):
            found[scraped(metrics.loop_crashes)].add(name)
    for call in calls("etcd"):  # Etcd._call(rpc_name, request, operation=snake(rpc's name))
        if isinstance(call.func, ast.Attribute) and call.func.attr == "_call":
            given = [k.value for k in call.keywords if k.arg == "operation"] + call.args[2:]
            rpc = literal(call.args[0])
            assert rpc, "Etcd._call with a computed RPC name"
            operation = literal(given[0]) if given else _snake(rpc.split(".")[1])
            assert operation, "Etcd._call with a computed operation"
            found[scraped(metrics.etcd_requests)].add(operation)
    return found


def test_metrics_page_names_every_label_value_the_code_passes() -> None:
    documented = keyed(rows(section("metrics.md", "Metrics")))
    for name, values in label_values_in_code().items():
        meaning = documented[name][3]
        for value in values:
            assert re.search(rf"[`\"]{re.escape(value)}[`\"]", meaning), f"{name}: {value!r}"


@pytest.mark.parametrize(
    "metric", [metrics.etcd_requests, metrics.loop_crashes], ids=lambda m: scraped(m)
)
def test_metrics_page_lists_exactly_these_label_values(metric: MetricWrapperBase) -> None:
    """Listed in full: the etcd operations, the loop names (no stale one either)."""
    _, _, labels, meaning = keyed(rows(section("metrics.md", "Metrics")))[scraped(metric)]
    listed = {s for s in spans(meaning) if re.fullmatch(r"[a-z_-]+", s)} - set(spans(labels))
    assert listed == label_values_in_code()[scraped(metric)]


# --------------------------------------------------------------------------- probes and doctor


def pattern(documented: str) -> re.Pattern[str]:
    """A documented message as a regex: `<...>` is a value, `...` any text."""
    parts = re.split(r"(<[^>]+>|\.\.\.)", documented)
    return re.compile("".join(".+?" if p[:1] == "<" or p == "..." else re.escape(p) for p in parts))


async def idle() -> None:
    """A loop's body that is never run: the loops here are only looked at."""


def probe_answers() -> list[tuple[str, str]]:
    """(probe, answer) for every answer `Health` gives, driven into each state."""
    loop = asyncio.new_event_loop()
    try:
        etcd = EtcdCheck(lambda: asyncio.sleep(0), timeout=1)
        etcd.reachable = True
        health = Health(
            etcd,
            view_complete=lambda: True,
            last_sweep=lambda: 0.0,
            sweep_deadline=1,
            misconfigured=lambda: None,
        )
        health.created = -1e9
        answers = [("/healthz", health.live()[1])]  # not started, late
        health.created, health.last_sweep = float("inf"), lambda: float("inf")
        answers.append(("/healthz", health.live()[1]))  # starting
        answers.append(("/readyz", health.ready()[1]))  # adopting
        health.started = True
        stopped, crashing = Loop("sweep", idle), Loop("status", idle)
        crashing.task, crashing.crashes = loop.create_future(), CRASH_LIMIT  # type: ignore[assignment]
        for failing in ([stopped], [crashing]):
            health.loops = failing
            answers.append(("/healthz", health.live()[1]))
        health.loops, health.last_sweep = [], lambda: 0.0
        answers.append(("/healthz", health.live()[1]))  # sweep stuck
        health.last_sweep = lambda: float("inf")
        answers.append(("/healthz", health.live()[1]))  # ok
        answers.append(("/readyz", health.ready()[1]))  # ok
        health.view_complete = lambda: False
        answers.append(("/readyz", health.ready()[1]))
        etcd.reachable, etcd.reason = False, "UNAVAILABLE: connection refused"
        answers.append(("/readyz", health.ready()[1]))
        me = Candidate("a/1", (), None, "reg/er", 1, "uid-a")
        for leader in (
            Candidate("b/1", ("shop",), None, "reg/er", 1, "uid-a"),  # another scope
            Candidate("b/1", (), None, "other/er", 1, "uid-a"),  # another installation
            Candidate("b/1", (), None, "reg/er", 1, "uid-b"),  # another cluster
            None,  # a value no etcd-registrar wrote
        ):
            refusal = judge(me, leader).reason
            health.misconfigured = lambda: refusal  # noqa: B023 - called at once
            answers.append(("/readyz", health.ready()[1]))
        return answers
    finally:
        loop.close()


def test_troubleshooting_lists_every_probe_answer() -> None:
    documented = [
        (code(answer), probe)
        for answer, probe, *_ in rows(section("troubleshooting.md", "Probe answers"))
    ]
    answers = probe_answers()
    assert len({a for _, a in answers}) == 13
    for probe, answer in answers:
        matching = [d for d, where in documented if pattern(d).fullmatch(answer)]
        assert len(matching) == 1, f"{probe} {answer!r}: documented as {matching}"
        [where] = [where for d, where in documented if d == matching[0]]
        assert where in (f"`{probe}`", "both"), f"{answer!r} is {probe}'s"
    for text, _ in documented:
        assert any(pattern(text).fullmatch(a) for _, a in answers), f"no such answer: {text!r}"


def fixes_quoted() -> Iterator[tuple[str, str]]:
    """(page, fix) for every doctor fix the docs show, in sample output or in the text."""
    for page in PAGES:
        text = page.read_text()
        yield from ((page.name, m) for m in re.findall(r"^ +fix: (.+)$", text, re.M))
        yield from ((page.name, " ".join(m.split())) for m in re.findall(r"`fix: ([^`]+)`", text))


def test_the_fixes_the_docs_quote_are_doctors() -> None:
    quoted = list(fixes_quoted())
    assert len(quoted) >= 3
    for page, fix in quoted:
        fix = fix.removesuffix("...")
        assert any(pattern(re.sub(r"\{\w+\}", "<x>", f)).fullmatch(fix) for f in doctor.FIXES), (
            f"docs/{page}: 'fix: {fix}' is not a fix doctor gives"
        )


def test_the_doctor_lines_the_docs_show_are_doctors() -> None:
    skipped = pattern(f"skip  <check>: {doctor.SKIPPED.format(needs='<what>')}")
    summary = re.compile(r"all checks passed|\d+ checks? failed(, \d+ skipped)?")
    for page in PAGES:
        for line in re.findall(
            r"^(?:skip|ok|FAIL|warn) .*$|^(?:all checks|\d+ checks?) .*$", page.read_text(), re.M
        ):
            if line.startswith("skip"):
                assert skipped.fullmatch(line), f"{page.name}: {line!r}"
            elif not line.startswith(("ok", "FAIL")):
                assert summary.fullmatch(line), f"{page.name}: {line!r}"


# --------------------------------------------------------------------------- command lines


COMMAND = re.compile(r"(?:^|\$ |-- |\| |kubectl )etcd-registrar ([^|;#&)]*)")


def command_lines() -> Iterator[tuple[str, str]]:
    """(page, arguments) of every `etcd-registrar` command in a code block or span."""
    for page in PAGES:
        text = page.read_text()
        blocks = re.findall(r"^```\w*\n(.*?)^```", text, re.M | re.S)
        inline = re.findall(
            r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        )
        for line in [ln for b in blocks for ln in b.splitlines()] + inline:
            # at the start of a command: a line, a prompt, after `--` or a pipe, or kubectl's
            for match in re.finditer(COMMAND, line):
                yield page.name, match[1].strip()


ARGUMENTS = list(command_lines())


def test_the_docs_show_command_lines() -> None:
    assert len(ARGUMENTS) >= 20


@pytest.mark.parametrize(("page", "arguments"), ARGUMENTS, ids=[f"{p}: {a}" for p, a in ARGUMENTS])
def test_every_command_line_in_the_docs_parses(page: str, arguments: str) -> None:
    """Parsed as given; in a synopsis (`ls [SERVICE] [--json]`) without its optional parts."""
    argv = shlex.split(re.sub(r"\[[^]]*\]|\.\.\.", "", arguments))
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code != 0:  # --version and --help exit 0
            pytest.fail(f"docs/{page}: `etcd-registrar {arguments}` is refused ({exc.code})")


def test_no_file_cites_a_design_document_the_repository_lacks() -> None:
    assert not (REPO_ROOT / "DESIGN.md").exists()
    tracked = [
        p
        for p in REPO_ROOT.rglob("*")
        if p.is_file() and p.suffix in {".py", ".md", ".tpl", ".yaml", ".go", ".sh"}
    ]
    citing = [
        str(p.relative_to(REPO_ROOT))
        for p in tracked
        if not {".venv", ".git", ".cluster", "results"} & set(p.relative_to(REPO_ROOT).parts)
        and p != Path(__file__).resolve()
        and "DESIGN" in p.read_text(errors="replace")
    ]
    assert not citing, f"these cite DESIGN, which is not in the repository; cite docs/: {citing}"


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
