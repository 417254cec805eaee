"""The CRD is generated from the model (DESIGN 2.2) and committed under crds/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcd_registrar import crd
from etcd_registrar.formats import FORMATS, TemplateError, compile_template
from etcd_registrar.model import ServiceRegistrationSpec

COMMITTED = Path(__file__).parents[2] / "crds" / "serviceregistrations.etcd-registrar.io.yaml"
CEL_ESCAPES = {"\\": "\\", "'": "'", '"': '"'}


def version() -> dict[str, Any]:
    [served] = crd.crd()["spec"]["versions"]
    return served  # type: ignore[no-any-return]


def spec_properties() -> dict[str, Any]:
    return version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]  # type: ignore[no-any-return]


def cel_string(literal: str) -> str:
    """Decode the body of a single-quoted CEL string; refuse escapes CEL does not know."""
    out, chars = [], iter(literal)
    for char in chars:
        if char == "\\":
            escaped = next(chars)
            if escaped not in CEL_ESCAPES:
                raise ValueError(f"invalid CEL escape \\{escaped} in {literal!r}")
            char = CEL_ESCAPES[escaped]
        elif char == "'":
            raise ValueError(f"unescaped quote in {literal!r}")
        out.append(char)
    return "".join(out)


def template_regex(field: str) -> re.Pattern[str]:
    [rule] = spec_properties()[field]["x-kubernetes-validations"]
    match = re.fullmatch(r"self\.matches\('(.*)'\)", rule["rule"])
    assert match, rule["rule"]
    return re.compile(cel_string(match[1]))


def test_committed_crd_is_generated_from_the_model() -> None:
    assert COMMITTED.read_text() == crd.render(), (
        f"{COMMITTED.name} is stale: run `make crds` and commit the result"
    )


def test_committed_crd_is_one_valid_manifest() -> None:
    [document] = list(yaml.safe_load_all(COMMITTED.read_text()))
    assert document["kind"] == "CustomResourceDefinition"


def test_names_and_subresources() -> None:
    manifest = crd.crd()
    assert manifest["metadata"]["name"] == "serviceregistrations.etcd-registrar.io"
    assert manifest["spec"]["scope"] == "Namespaced"
    assert "sreg" in manifest["spec"]["names"]["shortNames"]
    assert version()["name"] == "v1alpha1"
    assert version()["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = version()["additionalPrinterColumns"]
    assert [c["name"].upper() for c in columns] == [
        "SERVICE",
        "FORMAT",
        "ENDPOINTS",
        "READY",
        "AGE",
    ]
    assert all(c["jsonPath"].startswith((".status.", ".metadata.")) for c in columns)


def walk(node: object) -> Iterator[tuple[str, object]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def test_schema_is_structural() -> None:
    schema = version()["schema"]["openAPIV3Schema"]
    found = {key for key, _ in walk(schema)}
    assert not found & {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "const"}
    assert all(
        "type" in node or node.get("x-kubernetes-int-or-string")
        for key, props in walk(schema)
        if key == "properties" and isinstance(props, dict)
        for node in props.values()
    )


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("ttl", {"type": "integer", "minimum": 2, "maximum": 3600}),
        ("format", {"type": "string", "enum": list(FORMATS)}),
        ("port", {"x-kubernetes-int-or-string": True}),
        ("publishNotReady", {"type": "boolean", "default": False}),
        ("service", {"type": "string", "maxLength": 63}),
        ("scheme", {"enum": ["grpc", "http"]}),
    ],
    ids=str,
)
def test_spec_field_schema(field: str, expected: dict[str, Any]) -> None:
    node = spec_properties()[field]
    assert {k: node.get(k) for k in expected} == expected


def test_selector_schema_is_typed() -> None:
    selector = spec_properties()["selector"]["properties"]
    assert selector["matchLabels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert selector["matchExpressions"]["items"]["required"] == ["key", "operator"]


def test_status_conditions_are_a_map_list() -> None:
    status = version()["schema"]["openAPIV3Schema"]["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


TEMPLATES = [
    "{prefix}/{service}/{pod}",
    "{ip}:{port}",
    "{scheme}://{address}",
    "{prefix}/{namespace}/{node}/{uid}",
    "{{literal}}",
    "{{{pod}}}",
    '{{"a":"{ip}"}}',
    "plain/text",
    "",
    "{foo}",
    "{pod",
    "pod}",
    "{{pod}",
    "}}}",
    "{pod.__class__}",
    "{pod[0]}",
    "{pod!r}",
    "{pod:>10}",
    "{metadata}",
    "{}",
    "{POD}",
]


@pytest.mark.parametrize("field", ["key", "value"])
@pytest.mark.parametrize("template", TEMPLATES, ids=repr)
def test_cel_template_rule_agrees_with_the_operator(field: str, template: str) -> None:
    try:
        compile_template(template)
        accepted = True
    except TemplateError:
        accepted = False
    assert bool(template_regex(field).match(template)) is accepted


def test_cel_decoder_refuses_undoubled_backslash() -> None:
    with pytest.raises(ValueError, match="invalid CEL escape"):
        cel_string(r"^\{pod\}$")


def test_prefix_and_port_have_cel_rules() -> None:
    props = spec_properties()
    assert "'..'" in props["prefix"]["x-kubernetes-validations"][0]["rule"]
    assert "65535" in props["port"]["x-kubernetes-validations"][0]["rule"]


PORT_RULE_SHAPE = (
    r"type\(self\) == int \? self >= (\d+) && self <= (\d+)"
    r" : size\(self\) <= (\d+) && self\.matches\('(.*)'\)"
)


def cel_port_rule_accepts(port: int | str) -> bool:
    """The CRD's port rule, evaluated as the API server would."""
    [rule] = spec_properties()["port"]["x-kubernetes-validations"]
    match = re.fullmatch(PORT_RULE_SHAPE, rule["rule"])
    assert match, rule["rule"]
    low, high, longest = int(match[1]), int(match[2]), int(match[3])
    if isinstance(port, int):
        return low <= port <= high
    return len(port) <= longest and re.search(cel_string(match[4]), port) is not None


@pytest.mark.parametrize(
    "port",
    [1, 65535, 0, 65536, "http", "a", "x" * 15, "x" * 16, "metrics-exporter", "HTTP", "-a", "a-"],
    ids=repr,
)
def test_cel_port_rule_agrees_with_the_operator(port: int | str) -> None:
    try:
        ServiceRegistrationSpec.model_validate({"port": port})
        accepted = True
    except ValueError:
        accepted = False
    assert cel_port_rule_accepts(port) is accepted
