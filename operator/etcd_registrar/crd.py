"""Generate the ServiceRegistration CRD from the pydantic model: one source of truth.

Pydantic emits JSON Schema (``$ref``, ``anyOf`` with null, titles); Kubernetes wants a
structural OpenAPI v3 schema. ``structural()`` translates the one into the other.
"""

from __future__ import annotations

from typing import Any

import yaml

from etcd_registrar import GROUP, KIND, PLURAL, VERSION
from etcd_registrar.formats import PLACEHOLDERS, RESERVED_PREFIX
from etcd_registrar.model import (
    PORT_MAX,
    PORT_MIN,
    PORT_NAME_MAX_LENGTH,
    PORT_NAME_PATTERN,
    PORT_RULE,
    ServiceRegistrationSpec,
    ServiceRegistrationStatus,
)

_PLACEHOLDER_RE = "|".join(sorted(PLACEHOLDERS))
# A template is literal text (no braces) and {known} placeholders; {{ and }} escape braces.
_TEMPLATE_RE = rf"^([^{{}}]|\{{\{{|\}}\}}|\{{({_PLACEHOLDER_RE})\}})*$"


def _cel_string(text: str) -> str:
    """`text` as a single-quoted CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_TEMPLATE_RULE = f"self.matches({_cel_string(_TEMPLATE_RE)})"
# structural() turns the port's int | str union into x-kubernetes-int-or-string, which drops
# each reading's limits: they come back as CEL, the same limits as the model's Port.
_PORT_RULE = (
    f"type(self) == int ? self >= {PORT_MIN} && self <= {PORT_MAX}"
    f" : size(self) <= {PORT_NAME_MAX_LENGTH} && self.matches({_cel_string(PORT_NAME_PATTERN)})"
)


# The JSON Schema keywords a structural schema takes as they are: every constraint pydantic
# emits reaches the API server (tests/unit/test_crd.py checks none is dropped).
COPIED = (
    "type", "description", "enum", "format", "pattern", "minLength", "maxLength",
    "minimum", "maximum", "multipleOf", "minItems", "maxItems", "minProperties", "maxProperties",
)  # fmt: skip


def structural(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Translate one pydantic JSON Schema node into a structural OpenAPI v3 node."""
    defs = schema.get("$defs", defs) or {}
    if "$ref" in schema:
        return structural(defs[schema["$ref"].split("/")[-1]], defs)
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if branches:
        types = {b.get("type") for b in branches}
        node = (
            {"x-kubernetes-int-or-string": True}
            if types == {"integer", "string"}
            else structural(branches[0], defs)
        )
        if "description" in schema:
            node["description"] = schema["description"]
        return node
    out: dict[str, Any] = {key: schema[key] for key in COPIED if key in schema}
    # JSON Schema's exclusive bounds are numbers; OpenAPI v3.0's are flags on the bound.
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if exclusive in schema:
            out[bound], out[exclusive] = schema[exclusive], True
    if schema.get("uniqueItems"):  # Kubernetes refuses uniqueItems; a set list says the same
        out["x-kubernetes-list-type"] = "set"
    if "const" in schema:
        out["enum"] = [schema["const"]]
    if "default" in schema and schema["default"] is not None:
        out["default"] = schema["default"]
    if schema.get("type") == "object":
        if "properties" in schema:
            out["properties"] = {k: structural(v, defs) for k, v in schema["properties"].items()}
            if schema.get("required"):
                out["required"] = schema["required"]
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = structural(extra, defs)
    if schema.get("type") == "array":
        out["items"] = structural(schema["items"], defs)
    return out


def spec_schema() -> dict[str, Any]:
    node = structural(ServiceRegistrationSpec.model_json_schema(by_alias=True))
    props = node["properties"]
    for name in ("key", "value"):
        props[name]["x-kubernetes-validations"] = [
            {
                "rule": _TEMPLATE_RULE,
                "message": f"{name} may only use the placeholders "
                + " ".join("{" + p + "}" for p in sorted(PLACEHOLDERS)),
            }
        ]
    props["port"]["x-kubernetes-validations"] = [
        {"rule": _PORT_RULE, "message": f"port {PORT_RULE}"}
    ]
    props["prefix"]["x-kubernetes-validations"] = [
        {
            "rule": "!self.split('/').exists(s, s == '.' || s == '..')",
            "message": "prefix must not contain '.' or '..' segments",
        },
        {
            "rule": f"self != '{RESERVED_PREFIX}' && !self.startsWith('{RESERVED_PREFIX}/')",
            "message": f"prefix must not be under {RESERVED_PREFIX}, the operator's own keys",
        },
    ]
    return node


def status_schema() -> dict[str, Any]:
    node = structural(ServiceRegistrationStatus.model_json_schema(by_alias=True))
    conditions = node["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return node


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["sreg"],
                "categories": ["etcd-registrar"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Service", "type": "string", "jsonPath": ".status.service"},
                        {"name": "Format", "type": "string", "jsonPath": ".status.format"},
                        {"name": "Endpoints", "type": "integer", "jsonPath": ".status.endpoints"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        # -o wide: why a registration is not Ready
                        {
                            "name": "Reason",
                            "type": "string",
                            "priority": 1,
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
                        },
                        {
                            "name": "Message",
                            "type": "string",
                            "priority": 1,
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Registers the selected pods in etcd while ready.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `etcd-registrar crds` from etcd_registrar.model. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
