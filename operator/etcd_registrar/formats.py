"""Key/value layouts: one safe template renderer, and the consumer presets as plain data.

A template is text with ``{placeholder}`` fields. Only known names are accepted: attribute
or index access (``{pod.__class__}``, ``{pod[0]}``), conversions and format specs are
refused when the template is compiled, so rendering never evaluates anything.

JSON values are nested data whose strings are templates. A string that is exactly one
placeholder keeps the placeholder's type (``"{port}"`` renders the number 80, ``"{metadata}"``
an object), which lets every preset be data instead of a code path of its own.
"""

from __future__ import annotations

import functools
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Format = Literal["address", "json", "etcd-naming", "kratos", "go-zero", "go-micro", "coredns"]
FORMATS: tuple[Format, ...] = (
    "address",
    "json",
    "etcd-naming",
    "kratos",
    "go-zero",
    "go-micro",
    "coredns",
)

# Placeholders users may put in `key` and `value` templates (docs/crd.md).
PLACEHOLDERS = frozenset(
    {"prefix", "service", "namespace", "pod", "uid", "node", "ip", "port", "address", "scheme"}
)
# Extra values only the presets use: metadata never goes into keys or user text.
PRESET_PLACEHOLDERS = PLACEHOLDERS | {
    "metadata",
    "node_metadata",
    "version",
    "ttl",
    "dnspath",
}
# Values substituted into keys must stay one path segment: only the prefix may hold "/".
_MULTI_SEGMENT = frozenset({"prefix", "dnspath"})
# The operator's own bookkeeping (lease records, claims): no registration may write there.
RESERVED_PREFIX = "/etcd-registrar"
# Characters no key or value may hold: C0 controls and DEL (NUL truncates in many consumers,
# newlines break line-based tools and logs).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

JsonTemplate = str | int | bool | None | list["JsonTemplate"] | dict[str, "JsonTemplate"]


class TemplateError(ValueError):
    """A template the operator refuses; the message says what to fix."""


def is_reserved(key_or_prefix: str) -> bool:
    """True for the operator's bookkeeping prefix and anything under it."""
    return key_or_prefix == RESERVED_PREFIX or key_or_prefix.startswith(RESERVED_PREFIX + "/")


def check_text(what: str, text: str) -> None:
    """Refuse text etcd cannot carry safely: not encodable as UTF-8 (a lone surrogate such
    as the JSON escape \\ud800) or holding a control character."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise TemplateError(
            f"{what} is not valid UTF-8 (it holds a lone surrogate, e.g. the JSON escape "
            "\\ud800): use only real characters"
        ) from None
    if match := _CONTROL.search(text):
        raise TemplateError(f"{what} holds the control character {match[0]!r}: remove it")


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled text template: literal text and placeholder names, in order."""

    source: str
    parts: tuple[tuple[str, str | None], ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.parts if name is not None)

    def render(self, context: Mapping[str, Any], *, as_key: bool = False) -> str:
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                value = str(context[name])
                if as_key and name not in _MULTI_SEGMENT:
                    _check_segment(name, value)
                out.append(value)
        return "".join(out)


def _check_segment(name: str, value: str) -> None:
    if "/" in value or value in ("", ".", ".."):
        raise TemplateError(f"{{{name}}} rendered to {value!r}, which is not a single key segment")


def compile_template(source: str, allowed: frozenset[str] = PLACEHOLDERS) -> Template:
    """Parse ``source`` once; raise TemplateError naming the offending field."""
    try:
        parsed = list(string.Formatter().parse(source))
    except ValueError as exc:
        raise TemplateError(f"template {source!r}: {exc} (write {{{{ and }}}} for braces)") from exc
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is None:
            parts.append((literal, None))
            continue
        if name not in allowed or spec or conversion:
            field = (
                "{"
                + name
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise TemplateError(
                f"template {source!r}: unknown placeholder {field}; "
                f"allowed: {', '.join('{' + p + '}' for p in sorted(allowed & PLACEHOLDERS))}"
            )
        parts.append((literal, name))
    return Template(source, tuple(parts))


@dataclass(frozen=True, slots=True)
class Preset:
    """A consumer layout: default prefix, key template and value template (data only)."""

    prefix: str
    key: str
    value: JsonTemplate


_KRATOS_VALUE: JsonTemplate = {
    "id": "{pod}",
    "name": "{service}",
    "version": "{version}",
    "metadata": "{metadata}",
    "endpoints": ["{scheme}://{address}?isSecure=false"],
}
_GO_MICRO_VALUE: JsonTemplate = {
    "name": "{service}",
    "version": "{version}",
    "metadata": "{metadata}",
    "endpoints": [],
    "nodes": [{"id": "{service}-{pod}", "address": "{address}", "metadata": "{node_metadata}"}],
}
_JSON_VALUE: JsonTemplate = {
    "service": "{service}",
    "namespace": "{namespace}",
    "pod": "{pod}",
    "node": "{node}",
    "ip": "{ip}",
    "port": "{port}",
    "address": "{address}",
    "metadata": "{metadata}",
}

PRESETS: dict[Format, Preset] = {
    "address": Preset("/services", "{prefix}/{service}/{pod}", "{address}"),
    "json": Preset("/services", "{prefix}/{service}/{pod}", _JSON_VALUE),
    # go.etcd.io/etcd/client/v3/naming: endpoints.Update has no JSON tags, hence capitals.
    "etcd-naming": Preset(
        "/services",
        "{prefix}/{service}/{address}",
        # Metadata stays null: the etcd 3.5 resolver hands it to grpc-go as
        # resolver.Address.Metadata, and an object there panics grpc-go 1.71's round_robin
        # ("comparing uncomparable type", etcd-io/etcd#19700); a string that changes drops
        # the backend. Metadata goes in the json/kratos/go-micro formats.
        {"Op": 0, "Addr": "{address}", "Metadata": None},
    ),
    # kratos watchers drop instances whose `name` differs from the key segment.
    "kratos": Preset("/microservices", "{prefix}/{service}/{pod}", _KRATOS_VALUE),
    # go-zero subscribers read `<key>/<id>` with no leading slash and a plain address.
    "go-zero": Preset("", "{service}/{pod}", "{address}"),
    "go-micro": Preset("/micro/registry", "{prefix}/{service}/{service}-{pod}", _GO_MICRO_VALUE),
    # CoreDNS caps leased records by the value's ttl, so it is always set.
    "coredns": Preset(
        "/skydns",
        "{prefix}/{dnspath}/{pod}",
        {
            "host": "{ip}",
            "port": "{port}",
            "ttl": "{ttl}",
        },
    ),
}


@dataclass(frozen=True, slots=True)
class Layout:
    """Everything needed to render one registration's keys and values."""

    prefix: str
    key: Template
    value: Template | JsonTemplate
    scheme: str
    zone: str
    ttl: int
    metadata: Mapping[str, str]

    def root(self, service: str) -> str:
        """Where every key of `service` must lie: under the prefix, or (go-zero, no prefix)
        under the service name."""
        return f"{self.prefix}/" if self.prefix else f"{service}/"

    def service_range(self, service: str, namespace: str | None = None) -> str:
        """The key range every endpoint of `service` renders into: the key up to its first
        per-pod field, cut to whole segments (without `namespace`, that field counts as
        per-pod too). A consumer's prefix get; a service identity for tenancy."""
        context = {"prefix": self.prefix, "service": service, "namespace": namespace}
        dnspath = "/".join(reversed(f"{service}.{self.zone}".split(".")))
        out: list[str] = []
        for literal, name in self.key.parts:
            out.append(literal)
            if name == "dnspath":
                out.append(dnspath)
            elif name is None or context.get(name) is None:
                break
            else:
                out.append(str(context[name]))
        return "".join(out).rpartition("/")[0] + "/"

    def render(self, endpoint: Mapping[str, Any]) -> tuple[str, str]:
        """Render (key, value) for one endpoint's facts; TemplateError if the result is not
        a key this registration may write or a value etcd can carry."""
        key, value = self._render(endpoint)
        check_text("the rendered key", key)
        check_text("the rendered value", value)
        root = self.root(endpoint["service"])
        if not key.startswith(root) or any(s in (".", "..") for s in key.split("/")):
            raise TemplateError(f"the rendered key {key!r} is not under {root!r}")
        if is_reserved(key):
            raise TemplateError(f"the rendered key {key!r} is under {RESERVED_PREFIX}/, reserved")
        return key, value

    def _render(self, endpoint: Mapping[str, Any]) -> tuple[str, str]:
        metadata = {**self.metadata, **endpoint.get("metadata", {})}
        service = endpoint["service"]
        context: dict[str, Any] = {
            **endpoint,
            "prefix": self.prefix,
            "scheme": self.scheme,
            "address": _address(endpoint["ip"], endpoint["port"]),
            "metadata": metadata,
            "node_metadata": {**metadata, "protocol": self.scheme},
            "version": metadata.get("version", ""),
            "ttl": self.ttl,
            "dnspath": "/".join(reversed(f"{service}.{self.zone}".split("."))),
        }
        key = self.key.render(context, as_key=True)
        if isinstance(self.value, Template):
            return key, self.value.render(context)
        rendered = _render_json(self.value, context)
        if isinstance(rendered, str):
            return key, rendered
        return key, json.dumps(rendered, separators=(",", ":"), ensure_ascii=False)


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def compile_value(value: JsonTemplate, allowed: frozenset[str]) -> Template | JsonTemplate:
    """Compile a value template; nested JSON data is checked leaf by leaf."""
    if isinstance(value, str):
        return compile_template(value, allowed)
    _check_json(value, allowed)
    return value


def _check_json(value: JsonTemplate, allowed: frozenset[str]) -> None:
    if isinstance(value, str):
        compile_template(value, allowed)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, allowed)
    elif isinstance(value, dict):
        for item in value.values():
            _check_json(item, allowed)


@functools.lru_cache(maxsize=1024)
def _compiled_leaf(source: str) -> Template:
    return compile_template(source, PRESET_PLACEHOLDERS)


def _render_json(value: JsonTemplate, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        template = _compiled_leaf(value)
        fields = template.fields
        if len(template.parts) == 1 and fields and not template.parts[0][0]:
            return context[fields[0]]  # a lone placeholder keeps its type
        return template.render(context)
    if isinstance(value, list):
        return [_render_json(item, context) for item in value]
    if isinstance(value, dict):
        return {k: _render_json(v, context) for k, v in value.items()}
    return value


def build_layout(
    *,
    format: Format,
    prefix: str | None,
    key: str | None,
    value: str | None,
    scheme: str,
    zone: str,
    ttl: int,
    metadata: Mapping[str, str],
) -> Layout:
    """Resolve a registration's layout; raise TemplateError for a template it cannot use."""
    preset = PRESETS[format]
    key_template = (
        compile_template(key)
        if key is not None
        else compile_template(preset.key, PRESET_PLACEHOLDERS)
    )
    value_template = (
        compile_template(value)
        if value is not None
        else compile_value(preset.value, PRESET_PLACEHOLDERS)
    )
    resolved_prefix = preset.prefix if prefix is None else prefix
    if is_reserved(resolved_prefix):
        raise TemplateError(
            f"prefix {resolved_prefix!r} is the operator's own bookkeeping: choose another"
        )
    if not resolved_prefix and not key_template.source.startswith("{service}/"):
        raise TemplateError(
            f"format {format} needs a non-empty prefix: keys must stay under one "
            "(only keys that start with '{service}/', like go-zero's, may go without)"
        )
    if resolved_prefix and not key_template.source.startswith("{prefix}/"):
        if key is None:
            raise TemplateError(
                f"format {format} keys have no prefix; to put them under {resolved_prefix!r} "
                "set a key template such as '{prefix}/{service}/{pod}'"
            )
        raise TemplateError(
            f"key template {key_template.source!r} must start with '{{prefix}}/' "
            f"so keys stay under the prefix {resolved_prefix!r}"
        )
    return Layout(resolved_prefix, key_template, value_template, scheme, zone, ttl, metadata)
