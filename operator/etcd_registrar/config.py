"""Operator configuration: `etcd-registrar run` flags, each also read from ETCD_REGISTRAR_<FLAG>.

The flags are generated from this model (one source of truth for the CLI, the environment,
the Helm values and the docs).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from etcd_registrar.candidacy import Candidate
from etcd_registrar.etcd import EtcdConfig, check_tls, grpc_targets
from etcd_registrar.formats import Format, TemplateError
from etcd_registrar.model import PREFIX_PATTERN, TTL_MAX, TTL_MIN, check_prefix
from etcd_registrar.source import Defaults
from etcd_registrar.tenancy import within

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str | float) -> float:
    """Seconds from `30`, `30s`, `500ms`, `1m` or `1h`."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a duration such as 30s, 500ms or 1m")
    return float(match[1]) * _UNITS[match[2]]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ETCD_REGISTRAR_", extra="forbid")

    etcd_endpoints: Annotated[list[str], NoDecode] = Field(
        default=["http://127.0.0.1:2379"], description="Comma-separated etcd client URLs."
    )
    etcd_ca: Path | None = Field(None, description="CA bundle that signs the etcd server certs.")
    etcd_cert: Path | None = Field(None, description="Client certificate for etcd mTLS.")
    etcd_key: Path | None = Field(None, description="Client key for etcd mTLS.")
    etcd_username: str | None = Field(None, description="etcd user (with --etcd-password-file).")
    etcd_password_file: Path | None = Field(None, description="File holding the etcd password.")
    etcd_timeout: float = Field(5.0, gt=0, description="Seconds before an etcd request fails.")
    namespace: Annotated[list[str], NoDecode] = Field(
        default=[], description="Namespaces to watch (repeatable); default: all."
    )
    pod_selector: str | None = Field(
        None, description="Server-side label selector for the pods watched (large clusters)."
    )
    default_ttl: int = Field(10, ge=TTL_MIN, le=TTL_MAX, description="Lease TTL in seconds.")
    default_format: Format = Field("address", description="Layout for annotated pods.")
    default_prefix: str | None = Field(
        None, pattern=PREFIX_PATTERN, description="Key prefix; default: the format's own."
    )
    owner_id: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9_.-]{1,63}$",
        description="Names this operator's leases, for several clusters sharing one etcd.",
    )
    installation: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_./-]{1,253}$",
        description="Names this installation (the chart: <namespace>/<release>); another "
        "one with the same owner id is refused.",
    )
    config_generation: int = Field(
        0,
        ge=0,
        description="Generation of this installation's configuration (the chart: the Helm "
        "revision); a newer one takes over from an older one.",
    )
    resync: float = Field(30.0, gt=0, description="Sweep interval (e.g. 30s, 1m).")
    allowed_prefix: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Prefixes keys may lie under (repeatable); default: any but /etcd-registrar.",
    )
    max_keys_per_namespace: int = Field(
        10_000, ge=1, description="Keys one namespace may hold; more are refused (etcd quota)."
    )
    max_claims_per_namespace: int = Field(
        100, ge=1, description="Service ranges one namespace may own (assigned ones aside)."
    )
    claims: Literal["first-come", "assigned"] = Field(
        "first-come",
        description="Who may own a service range: the first namespace to ask (first-come), or "
        "only one an administrator assigned it to (assigned; Namespace annotation "
        "etcd-registrar.io/claims).",
    )
    max_value_bytes: int = Field(
        16_384, ge=256, le=1_048_576, description="Largest value a key may hold (etcd quota)."
    )
    readiness_gate: bool = Field(
        True,
        description="Set the etcd-registrar.io/registered condition of pods that declare "
        "it as a readiness gate (needs pods/status patch).",
    )
    dry_run: bool = Field(False, description="Log every etcd write instead of writing.")
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus port; 0 disables.")
    health_port: int = Field(8081, ge=0, le=65535, description="/healthz and /readyz; 0 disables.")
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log lines shown; debug also shows kopf's."
    )
    kubeconfig: Path | None = Field(
        None,
        description="Kubeconfig file, used outside a pod; default $KUBECONFIG, "
        "then ~/.kube/config (in a pod: its ServiceAccount).",
    )

    @field_validator("etcd_endpoints", "namespace", "allowed_prefix", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [p.strip() for item in value for p in str(item).split(",") if p.strip()]
        return value

    @field_validator("etcd_endpoints")
    @classmethod
    def _valid_endpoints(cls, value: list[str]) -> list[str]:
        grpc_targets(value)  # raises ValueError with the reason
        return value

    @field_validator("resync", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str | int | float) else value

    _prefix_segments = field_validator("default_prefix")(check_prefix)

    @field_validator("allowed_prefix")
    @classmethod
    def _allowed_prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:  # go-zero keys have no leading slash: neither must these
            if not re.fullmatch(r"/?[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/?", prefix):
                raise ValueError(f"--allowed-prefix {prefix!r} is not a key prefix like /services")
            check_prefix(prefix.rstrip("/"))
        return value

    @model_validator(mode="after")
    def _prefix_fits_format(self) -> Settings:
        if self.default_prefix is not None:
            try:
                Defaults(self.default_ttl, self.default_format, self.default_prefix)
            except TemplateError as exc:
                raise ValueError(f"--default-prefix: {exc}") from None
        check_tls(self.etcd_endpoints, self.etcd_ca, self.etcd_cert, self.etcd_key)
        prefix = Defaults(self.default_ttl, self.default_format, self.default_prefix).layout.prefix
        if prefix and not within(prefix + "/", self.allowed_prefix):
            raise ValueError(
                f"the default prefix {prefix} is outside --allowed-prefix "
                f"{', '.join(self.allowed_prefix)}: set --default-prefix under one of them"
            )
        return self

    def missing_file(self) -> str | None:
        """The first file setting whose file cannot be read, as `--flag path: reason`."""
        for name in ("etcd_ca", "etcd_cert", "etcd_key", "etcd_password_file", "kubeconfig"):
            path: Path | None = getattr(self, name)
            if path is None or (path.is_file() and os.access(path, os.R_OK)):
                continue
            reason = "no such file" if not path.exists() else "not a readable file"
            return f"--{name.replace('_', '-')} {path}: {reason}"
        return None

    def candidate(self, replica: str, cluster: str = "") -> Candidate:
        """What replica `replica` of this configuration, in cluster `cluster`, stands for in
        the leader key (candidacy.py)."""
        return Candidate(
            replica,
            tuple(sorted(self.namespace)),
            self.pod_selector,
            self.installation or "",
            self.config_generation,
            cluster,
        )

    def defaults(self) -> Defaults:
        """What applies to a service no registration (or field) decides."""
        return Defaults(
            self.default_ttl,
            self.default_format,
            self.default_prefix,
            max_value_bytes=self.max_value_bytes,
            allowed_prefixes=tuple(self.allowed_prefix),
        )

    def etcd(self) -> EtcdConfig:
        return EtcdConfig(
            endpoints=tuple(self.etcd_endpoints),
            ca=self.etcd_ca,
            cert=self.etcd_cert,
            key=self.etcd_key,
            username=self.etcd_username,
            password_file=self.etcd_password_file,
            timeout=self.etcd_timeout,
        )
