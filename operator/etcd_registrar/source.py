"""Source: pods and registrations in, desired endpoints (key, value, lease TTL) out. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import ValidationError

from etcd_registrar.formats import Format, Layout, TemplateError, build_layout
from etcd_registrar.model import (
    SERVICE_PATTERN,
    LabelSelector,
    Port,
    ServiceRegistrationSpec,
    describe,
    parse_pod_annotations,
)
from etcd_registrar.readiness import PodState, should_register
from etcd_registrar.tenancy import ASSIGNMENT, within

PortList = tuple[tuple[str | None, int], ...]


class ServiceId(NamedTuple):
    """A service of a namespace: what a registration governs and its keys are counted by."""

    namespace: str
    service: str


class RegistrationId(NamedTuple):
    """A ServiceRegistration object, by namespace and object name."""

    namespace: str
    name: str


class Pool(NamedTuple):
    """The lease pool a key belongs to: the keys of one service with one TTL share leases."""

    namespace: str
    service: str
    ttl: int

    @property
    def service_id(self) -> ServiceId:
        return ServiceId(self.namespace, self.service)


@dataclass(frozen=True, slots=True)
class PodView:
    """What the operator keeps of a pod: small, immutable, enough to render its keys."""

    uid: str
    namespace: str
    name: str
    node: str
    created: str
    labels: Mapping[str, str]
    state: PodState
    ports: PortList
    service: str | None = None  # from the opt-in annotation
    port: Port | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    annotation_error: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodView:
        meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
        ports = tuple(
            (p.get("name"), int(p["containerPort"]))
            for c in spec.get("containers") or []
            for p in c.get("ports") or []
            if "containerPort" in p
        )
        base = {
            "uid": meta["uid"],
            "namespace": meta["namespace"],
            "name": meta["name"],
            "node": spec.get("nodeName") or "",
            "created": meta.get("creationTimestamp") or "",
            "labels": dict(meta.get("labels") or {}),
            "state": PodState.from_status(
                status,
                bool(meta.get("deletionTimestamp")),
                (g.get("conditionType") for g in spec.get("readinessGates") or []),
            ),
            "ports": ports,
        }
        annotations = meta.get("annotations") or {}
        try:
            opt_in = parse_pod_annotations(annotations)
        except ValueError as exc:
            return cls(**base, annotation_error=str(exc))
        if opt_in is None:
            return cls(**base)
        return cls(**base, service=opt_in.service, port=opt_in.port, metadata=opt_in.metadata)

    @property
    def ref(self) -> dict[str, Any]:
        """The pod as an Event's involvedObject."""
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }

    @property
    def rank(self) -> tuple[str, str, str]:
        """Conflict order: the oldest pod wins a key, then by namespace and name."""
        return (self.created, self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Registration:
    """A ServiceRegistration as the operator uses it; `error` says why it is not valid."""

    namespace: str
    name: str
    uid: str
    generation: int
    service: str
    format: Format
    selector: LabelSelector | None = None
    port: Port | None = None
    publish_not_ready: bool = False
    layout: Layout | None = None
    error: str | None = None
    created: str = ""
    share_with: frozenset[str] = frozenset()

    @classmethod
    def from_body(cls, body: Mapping[str, Any], defaults: Defaults) -> Registration:
        meta = body["metadata"]
        ident = {
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta.get("uid", ""),
            "generation": int(meta.get("generation") or 0),
            "created": meta.get("creationTimestamp") or "",
        }
        raw_spec = dict(body.get("spec") or {})
        try:
            spec = ServiceRegistrationSpec.model_validate(raw_spec)
        except ValidationError as exc:
            service = raw_spec.get("service") or meta["name"]
            return cls(**ident, service=str(service), format=defaults.format, error=describe(exc))
        fmt = spec.format or defaults.format
        service = spec.service or meta["name"]
        if not re.fullmatch(SERVICE_PATTERN, service) or len(service) > 63:
            error = f"the name {service!r} is not a valid service name: set spec.service"
            return cls(**ident, service=service, format=fmt, error=error)
        try:
            layout = build_layout(
                format=fmt,
                prefix=spec.prefix if spec.prefix is not None else defaults.prefix_for(fmt),
                key=spec.key,
                value=spec.value,
                scheme=spec.scheme,
                zone=spec.zone,
                ttl=spec.ttl or defaults.ttl,
                metadata=spec.metadata or {},
            )
        except TemplateError as exc:
            return cls(**ident, service=service, format=fmt, error=str(exc))
        keys = layout.service_range(service, ident["namespace"])
        if not within(keys, defaults.allowed_prefixes):
            error = (
                f"keys under {keys} are outside the prefixes this operator may write "
                f"({', '.join(defaults.allowed_prefixes) or 'none'}; --allowed-prefix): "
                "choose a prefix under one of them"
            )
            return cls(**ident, service=service, format=fmt, error=error)
        return cls(
            **ident,
            service=service,
            format=fmt,
            selector=spec.selector,
            port=spec.port,
            publish_not_ready=spec.publish_not_ready,
            layout=layout,
            share_with=frozenset(spec.share_with or ()),
        )

    @property
    def id(self) -> RegistrationId:
        return RegistrationId(self.namespace, self.name)

    @property
    def service_id(self) -> ServiceId:
        return ServiceId(self.namespace, self.service)

    @property
    def identity(self) -> str | None:
        """The key range this registration's service renders into (None: invalid spec)."""
        return self.layout.service_range(self.service, self.namespace) if self.layout else None

    def selects(self, pod: PodView) -> bool:
        return self.selector is not None and self.selector.matches(dict(pod.labels))


@dataclass(frozen=True, slots=True)
class Defaults:
    """Operator-wide layout for annotated pods without a ServiceRegistration."""

    ttl: int = 10
    format: Format = "address"
    prefix: str | None = None  # for the default format only: other formats keep their own
    max_value_bytes: int = 16384  # one tenant must not fill etcd's quota with huge values
    allowed_prefixes: tuple[str, ...] = ()  # every key lies under one of these (none: anywhere)
    layout: Layout = field(init=False)

    def __post_init__(self) -> None:
        layout = build_layout(
            format=self.format,
            prefix=self.prefix,
            key=None,
            value=None,
            scheme="grpc",
            zone="skydns.local",
            ttl=self.ttl,
            metadata={},
        )
        object.__setattr__(self, "layout", layout)

    def prefix_for(self, fmt: Format) -> str | None:
        return self.prefix if fmt == self.format else None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One desired key: what to write, under which lease TTL, on behalf of which pod."""

    key: str
    value: str
    ttl: int
    namespace: str
    service: str
    pod_uid: str
    pod_name: str
    rank: tuple[str, str, str]
    identity: str = ""  # the service's key range (tenancy)

    @property
    def service_id(self) -> ServiceId:
        return ServiceId(self.namespace, self.service)


@dataclass(frozen=True, slots=True)
class Problem:
    """A refusal to register a pod for a service, with a message that says what to fix."""

    service: str | None
    message: str


def resolve_port(requested: Port | None, ports: PortList) -> int:
    """The port number to publish; ValueError says why there is none."""
    if requested is None:
        if not ports:
            raise ValueError(
                "the pod declares no containerPort: declare one or set etcd-registrar.io/port"
            )
        return ports[0][1]
    if isinstance(requested, int):
        return requested
    for name, number in ports:
        if name == requested:
            return number
    declared = ", ".join(n for n, _ in ports if n) or "none"
    raise ValueError(
        f"port name {requested!r} is not declared by any container (named: {declared})"
    )


class Desired(NamedTuple):
    """What a pod should hold now: its keys, the problems that stop any of them, and the
    key ranges it wants keys in, ready or not (tenancy counts it present there):
    identity -> service."""

    endpoints: list[Endpoint]
    problems: list[Problem]
    interests: dict[str, str]


def desired_for_pod(
    pod: PodView, registrations: Iterable[Registration], defaults: Defaults
) -> Desired:
    """The keys `pod` should hold now, the problems that stop any of them, its interests.

    `registrations` are those of the pod's namespace. The annotation's service is governed by
    the registration of the same service if one exists, else by `defaults`; every registration
    whose selector matches adds its service too (once per service).
    """
    result = Desired([], [], {})
    if pod.annotation_error:
        result.problems.append(Problem(None, pod.annotation_error))
    for service, governing in _wanted(pod, registrations).items():
        layout = defaults.layout if governing is None else governing.layout
        if layout is None:  # the governing registration is invalid: it reports why
            continue
        identity = layout.service_range(service, pod.namespace)
        result.interests[identity] = service
        publish_not_ready = governing is not None and governing.publish_not_ready
        if not should_register(pod.state, publish_not_ready=publish_not_ready):
            continue
        requested = pod.port if pod.port is not None or governing is None else governing.port
        try:
            port = resolve_port(requested, pod.ports)
            facts = {
                "service": service,
                "namespace": pod.namespace,
                "pod": pod.name,
                "uid": pod.uid,
                "node": pod.node,
                "ip": pod.state.ip,
                "port": port,
                "metadata": pod.metadata,
            }
            key, value = layout.render(facts)
            if not within(key, defaults.allowed_prefixes):
                raise ValueError(
                    f"the key {key} is outside the prefixes this operator may write "
                    f"({', '.join(defaults.allowed_prefixes)}; --allowed-prefix)"
                )
            if len(value.encode()) > defaults.max_value_bytes:
                raise ValueError(
                    f"the value for {key} is {len(value.encode())} bytes, over this operator's "
                    f"limit of {defaults.max_value_bytes} (--max-value-bytes): shrink the metadata"
                )
        except ValueError as exc:  # TemplateError included
            result.problems.append(Problem(service, str(exc)))
            continue
        result.endpoints.append(
            Endpoint(
                key,
                value,
                layout.ttl,
                pod.namespace,
                service,
                pod.uid,
                pod.name,
                pod.rank,
                identity,
            )
        )
    return result


def _wanted(pod: PodView, registrations: Iterable[Registration]) -> dict[str, Registration | None]:
    """The services `pod` opts into, each with its governing registration (None: the
    defaults govern): the annotation's service, then every service whose selector matches."""
    by_service = {r.service: r for r in registrations}
    wanted: dict[str, Registration | None] = {}
    if pod.service is not None:
        wanted[pod.service] = by_service.get(pod.service)
    for reg in by_service.values():
        if reg.selects(pod):
            wanted.setdefault(reg.service, reg)
    return wanted


MAX_ASSIGNED = 1000  # ranges one Namespace annotation may assign


def assigned_ranges(
    namespace: Mapping[str, Any], defaults: Defaults
) -> tuple[list[str], list[str]]:
    """The ranges an administrator assigned to a Namespace (its annotation ``ASSIGNMENT``,
    comma-separated): a key range as written (``/services/payments/``, a trailing ``/``
    added), or a service name standing for its range in the operator's default layout. Also
    returns what was wrong with the entries skipped."""
    text = ((namespace.get("metadata") or {}).get("annotations") or {}).get(ASSIGNMENT, "")
    ranges: list[str] = []
    errors: list[str] = []
    for entry in (e.strip() for e in str(text).split(",")):
        if not entry:
            continue
        if "/" in entry:
            range_ = entry if entry.endswith("/") else f"{entry}/"
            if not within(range_, ()) or any(s in (".", "..") for s in range_.split("/")):
                errors.append(f"{entry!r}: not a key range this operator may assign")
                continue
        elif re.fullmatch(SERVICE_PATTERN, entry) and len(entry) <= 63:
            range_ = defaults.layout.service_range(entry)
        else:
            errors.append(f"{entry!r}: neither a key range (with /) nor a service name")
            continue
        ranges.append(range_)
    if len(ranges) > MAX_ASSIGNED:
        errors.append(f"{len(ranges)} ranges, over the limit of {MAX_ASSIGNED}: none assigned")
        ranges = []
    return ranges, errors


def pool_of(endpoint: Endpoint) -> Pool:
    return Pool(endpoint.namespace, endpoint.service, endpoint.ttl)
