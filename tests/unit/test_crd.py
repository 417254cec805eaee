"""The CRD is generated from the model (docs/crd.md) and committed under crds/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcd_registrar import crd
from etcd_registrar.formats import FORMATS, TemplateError, compile_template
from etcd_registrar.model import ServiceRegistrationSpec, ServiceRegistrationStatus

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
    default = [c["name"].upper() for c in columns if not c.get("priority")]
    assert default == ["SERVICE", "FORMAT", "ENDPOINTS", "READY", "AGE"]
    wide = [c["name"].upper() for c in columns if c.get("priority") == 1]  # kubectl -o wide
    assert wide == ["REASON", "MESSAGE"]
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


# Every constraint keyword pydantic can emit, and how the CRD must show it.
CONSTRAINTS = {
    "pattern": "pattern",
    "minLength": "minLength",
    "maxLength": "maxLength",
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusiveMinimum": "minimum",
    "exclusiveMaximum": "maximum",
    "multipleOf": "multipleOf",
    "minItems": "minItems",
    "maxItems": "maxItems",
    "minProperties": "minProperties",
    "maxProperties": "maxProperties",
    "enum": "enum",
}


def pydantic_constraints(
    schema: dict[str, Any], defs: dict[str, Any], path: str = ""
) -> Iterator[tuple[str, str, object]]:
    """(path, keyword, value) of every constraint in a pydantic JSON Schema, $refs followed,
    the null branch of optional fields dropped. A path is the CRD's: properties, `[]` for
    items, `{}` for map values."""
    if "$ref" in schema:
        yield from pydantic_constraints(defs[schema["$ref"].split("/")[-1]], defs, path)
        return
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) > 1:  # int | str: the CRD checks each reading with CEL instead
        yield path, "x-kubernetes-validations", None
        return
    for branch in branches:
        yield from pydantic_constraints(branch, defs, path)
    for keyword in CONSTRAINTS:
        if keyword in schema:
            yield path, keyword, schema[keyword]
    if schema.get("uniqueItems"):
        yield path, "uniqueItems", True
    for name, sub in schema.get("properties", {}).items():
        yield from pydantic_constraints(sub, defs, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from pydantic_constraints(schema["items"], defs, f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from pydantic_constraints(schema["additionalProperties"], defs, f"{path}{{}}")


def crd_node(root: dict[str, Any], path: str) -> dict[str, Any]:
    node = root
    for step in re.findall(r"\.[^.[{]+|\[\]|\{\}", path):
        if step == "[]":
            node = node["items"]
        elif step == "{}":
            node = node["additionalProperties"]
        else:
            node = node["properties"][step[1:]]
    return node


@pytest.mark.parametrize("model", [ServiceRegistrationSpec, ServiceRegistrationStatus])
def test_every_pydantic_constraint_reaches_the_crd(model: type[Any]) -> None:
    """A limit the model enforces but the CRD drops is accepted by `kubectl apply` and only
    refused later, as InvalidSpec (shareWith's maxItems was)."""
    schema = model.model_json_schema(by_alias=True)
    found = list(pydantic_constraints(schema, schema.get("$defs", {})))
    root = crd.structural(schema)
    if model is ServiceRegistrationSpec:
        root = crd.spec_schema()
        assert (".shareWith", "maxItems", 64) in found
    for path, keyword, value in found:
        node = crd_node(root, path)
        if keyword == "x-kubernetes-validations":
            assert node.get(keyword), f"{path}: neither reading of int | str is checked"
        elif keyword == "uniqueItems":
            assert node.get("x-kubernetes-list-type") == "set", path
        else:
            assert node.get(CONSTRAINTS[keyword]) == value, f"{path}: {keyword} {value!r} dropped"


def test_structural_copies_every_constraint_keyword() -> None:
    """The keywords the model does not use today, on a model that uses them all."""
    from pydantic import BaseModel, Field

    class Limits(BaseModel):
        tags: set[str] = Field(min_length=1, max_length=5)
        labels: dict[str, str] = Field(min_length=1, max_length=9)
        ratio: float = Field(gt=0, lt=1, multiple_of=0.25)

    schema = Limits.model_json_schema()
    found = list(pydantic_constraints(schema, {}))
    assert {keyword for _, keyword, _ in found} >= {
        "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties",
        "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    }  # fmt: skip
    node = crd.structural(schema)
    assert node["properties"]["tags"]["x-kubernetes-list-type"] == "set"
    assert node["properties"]["ratio"]["exclusiveMinimum"] is True
    for path, keyword, value in found:
        if keyword != "uniqueItems":
            assert crd_node(node, path).get(CONSTRAINTS[keyword]) == value, (path, keyword)
