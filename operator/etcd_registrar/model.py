"""The public data model: ServiceRegistration spec/status and pod annotations, validated.

The CRD's OpenAPI schema is generated from these models (see ``crd.py``), so the API server
and the operator enforce the same rules. Rules a schema cannot express are checked here and
surface as an InvalidSpec condition or a Warning Event.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from etcd_registrar import ANNOTATION_METADATA, ANNOTATION_PORT, ANNOTATION_SERVICE
from etcd_registrar.formats import (
    RESERVED_PREFIX,
    Format,
    TemplateError,
    check_text,
    is_reserved,
)

# DNS-1123 labels joined by dots: no empty label ("a..b"), as formats build DNS names of it.
SERVICE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # namespace names
PORT_NAME_PATTERN = DNS_LABEL_PATTERN
PREFIX_PATTERN = r"^(/[A-Za-z0-9_.-]+)*$"
ZONE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
METADATA_MAX_BYTES = 4096
METADATA_MAX_DEPTH = 8  # JSON nesting checked before parsing: deep input would recurse
TTL_MIN, TTL_MAX = 2, 3600

PORT_MIN, PORT_MAX = 1, 65535
PORT_NAME_MAX_LENGTH = 15  # IANA service names, as Kubernetes container port names
# What a valid port is, in one sentence: the operator's refusal and the CRD's CEL message.
PORT_RULE = (
    f"must be a port number {PORT_MIN}-{PORT_MAX} or a port name: at most "
    f"{PORT_NAME_MAX_LENGTH} lower-case letters, digits and '-', starting and ending with a "
    "letter or digit"
)

ServiceName = Annotated[str, Field(min_length=1, max_length=63, pattern=SERVICE_PATTERN)]
NamespaceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
PortNumber = Annotated[int, Field(ge=PORT_MIN, le=PORT_MAX)]
PortName = Annotated[
    str, Field(min_length=1, max_length=PORT_NAME_MAX_LENGTH, pattern=PORT_NAME_PATTERN)
]


def _one_port_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A port is a number or a name: refuse it once, saying what is valid, instead of one
    error per reading ("should be <= 65535", "should be a valid string")."""
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError("port", PORT_RULE) from None


Port = Annotated[PortNumber | PortName, WrapValidator(_one_port_error)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )

    @model_validator(mode="before")
    @classmethod
    def _clean_text(cls, data: Any) -> Any:
        """Every string must be valid UTF-8 with no control character: refused here, at the
        edge, rather than by the etcd client deep in the writer."""
        check_strings(data, "")
        return data


def check_strings(data: Any, path: str) -> None:
    """Raise ValueError naming the first string under `data` that etcd cannot carry."""
    if isinstance(data, str):
        try:
            check_text(path or "value", data)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
    elif isinstance(data, dict):
        for key, value in data.items():
            name = str(key).encode("unicode_escape").decode()  # the message itself must be safe
            where = f"{path}.{name}" if path else name
            check_strings(key, f"{where} (the name)")
            check_strings(value, where)
    elif isinstance(data, list):
        for n, item in enumerate(data):
            check_strings(item, f"{path}[{n}]")


class LabelSelectorRequirement(_Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        inside = present and labels[self.key] in (self.values or [])
        return inside if self.operator == "In" else not inside


class LabelSelector(_Model):
    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes semantics: all terms must hold; an empty selector matches everything."""
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions or [])


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is not None and len(json.dumps(value).encode()) > METADATA_MAX_BYTES:
        raise ValueError(f"metadata is larger than {METADATA_MAX_BYTES} bytes as JSON")
    return value


def check_prefix(value: str | None) -> str | None:
    if value is not None and any(seg in (".", "..") for seg in value.split("/")):
        raise ValueError(f"prefix {value!r} must not contain '.' or '..' segments")
    if value is not None and is_reserved(value):
        raise ValueError(f"prefix {value!r} is under {RESERVED_PREFIX}, the operator's own keys")
    return value


def json_depth(text: str) -> int:
    """How deeply `text` nests JSON arrays and objects (brackets inside strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped = not escaped and char == "\\"
            in_string = escaped or char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


class ServiceRegistrationSpec(_Model):
    """What to register for the selected pods, and how keys and values look."""

    service: ServiceName | None = Field(None, description="Service name; default: metadata.name.")
    selector: LabelSelector | None = Field(
        None, description="Pods matching this label selector are registered without annotations."
    )
    port: Port | None = Field(
        None, description="Container port number or name; a pod annotation wins."
    )
    ttl: int | None = Field(
        None, ge=TTL_MIN, le=TTL_MAX, description="Lease TTL in seconds; default from the operator."
    )
    format: Format | None = Field(None, description="Key/value layout; default from the operator.")
    prefix: str | None = Field(
        None, max_length=253, pattern=PREFIX_PATTERN, description="Key prefix; default per format."
    )
    key: str | None = Field(
        None, max_length=512, description="Key template; overrides the format's."
    )
    value: str | None = Field(
        None, max_length=4096, description="Value template; overrides the format's."
    )
    metadata: dict[str, str] | None = Field(
        None, description="Metadata carried in JSON-shaped values."
    )
    publish_not_ready: bool = Field(
        False, description="Register pods with an IP whatever their readiness."
    )
    scheme: Literal["grpc", "http"] = Field(
        "grpc", description="Endpoint scheme for kratos endpoints and go-micro's protocol."
    )
    share_with: list[NamespaceName] | None = Field(
        None,
        max_length=64,
        description="Namespaces the owner admits into this service's key range (tenancy).",
    )
    zone: str = Field(
        "skydns.local",
        max_length=253,
        pattern=ZONE_PATTERN,
        description="DNS zone for the coredns format: records for <service>.<zone>.",
    )

    _metadata_size = field_validator("metadata")(check_metadata)
    _prefix_segments = field_validator("prefix")(check_prefix)


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int | None = None


class ServiceRegistrationStatus(_Model):
    observed_generation: int | None = None
    service: str | None = Field(None, description="The resolved service name.")
    format: str | None = Field(None, description="The resolved format.")
    endpoints: int | None = Field(None, description="Keys currently held in etcd.")
    conditions: list[Condition] | None = None


class ServiceRegistration(_Model):
    """The custom resource, as far as the schema is concerned."""

    spec: ServiceRegistrationSpec
    status: ServiceRegistrationStatus | None = None


class PodOptIn(_Model):
    """The registrar annotations of one pod, validated (port and metadata also count for pods
    a registration selects without a service annotation)."""

    service: ServiceName | None = None
    port: Port | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    _metadata_size = field_validator("metadata")(check_metadata)


def parse_pod_annotations(annotations: dict[str, str]) -> PodOptIn | None:
    """The pod's registrar annotations, None without any; ValueError says what to fix."""
    if not annotations.keys() & _ANNOTATION_NAMES.values():
        return None
    raw: dict[str, Any] = {}
    if ANNOTATION_SERVICE in annotations:
        raw["service"] = annotations[ANNOTATION_SERVICE]
    if ANNOTATION_PORT in annotations:
        port = annotations[ANNOTATION_PORT].strip()
        # ASCII digits only: str.isdigit() and int() also take "٨٠" (Arabic-Indic 80).
        raw["port"] = int(port) if port.isascii() and port.isdigit() else port
    if ANNOTATION_METADATA in annotations:
        text = annotations[ANNOTATION_METADATA]
        if len(text.encode(errors="surrogatepass")) > METADATA_MAX_BYTES:
            raise ValueError(f"{ANNOTATION_METADATA} is larger than {METADATA_MAX_BYTES} bytes")
        if json_depth(text) > METADATA_MAX_DEPTH:
            raise ValueError(
                f"{ANNOTATION_METADATA} nests deeper than {METADATA_MAX_DEPTH} levels: "
                "it must be a flat JSON object of strings"
            )
        try:
            raw["metadata"] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{ANNOTATION_METADATA} is not valid JSON: {exc.msg}") from exc
    try:
        check_strings({_ANNOTATION_NAMES[k]: v for k, v in raw.items()}, "")
        return PodOptIn.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(describe(exc, _ANNOTATION_NAMES)) from None


_ANNOTATION_NAMES = {
    "service": ANNOTATION_SERVICE,
    "port": ANNOTATION_PORT,
    "metadata": ANNOTATION_METADATA,
}


def describe(exc: ValidationError, names: dict[str, str] | None = None) -> str:
    """One readable line per problem: which field, what is wrong, what was given."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = [str(p) for p in error["loc"] if not str(p).startswith(("int", "str", "constrained"))]
        message = error["msg"].removeprefix("Value error, ")
        if not loc:  # a check of the whole object: its message names the field
            lines.append(message)
            continue
        head = (names or {}).get(loc[0], loc[0])
        shown = head if not loc[1:] else f"{head}.{'.'.join(loc[1:])}"
        lines.append(f"{shown}: {message} (got {error.get('input')!r})")
    return "; ".join(dict.fromkeys(lines))
