"""The Helm chart (charts/etcd-registrar) against the local cluster.

Every rendering is checked by the API server itself (`kubectl apply --dry-run=server`), so
a field the server rejects fails here, not at a user's install. The exceptions are the
ServiceMonitor and the PrometheusRule: their CRDs (prometheus-operator) are not installed in
the test cluster and installing them would change the cluster for every other test, so those
documents are left out of the server dry-run and checked against what they must match
instead (the metrics Service; the rules file, which tests/unit/test_chart_monitoring.py
checks).

The chart's CRD is not a hand-edited copy: files/crds/ holds the file `etcd-registrar crds`
generates (crds/ at the repository root) and test_chart_crd_is_the_generated_one fails when
they differ.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes
import pytest
import yaml
from kopf._core.reactor import observation

from etcd_registrar import GROUP, PLURAL, doctor, handlers, kube
from etcd_registrar.cli import build_parser, load_settings, service_prefix
from etcd_registrar.config import Settings
from etcd_registrar.formats import FORMATS, Format
from etcd_registrar.readiness import GATE
from tests.harness import (
    REPO_ROOT,
    Cluster,
    KubectlError,
    cache_dir,
    deployment_manifest,
    versions,
    wait_for,
)
from tests.operator_process import OperatorProcess, registry_keys

pytestmark = pytest.mark.e2e

CHART = REPO_ROOT / "charts" / "etcd-registrar"
CRD_NAME = "serviceregistrations.etcd-registrar.io.yaml"
GENERATED_CRD = REPO_ROOT / "crds" / CRD_NAME
CHART_CRD = CHART / "files" / "crds" / CRD_NAME

Doc = dict[str, Any]


# --------------------------------------------------------------------------- helm


def helm_binary() -> str:
    """$HELM when set (hack/kind-e2e.sh sets it), else the helm hack/build-tools.sh built
    (pinned in hack/versions.env)."""
    configured = os.environ.get("HELM")
    if configured:
        if not os.access(configured, os.X_OK):
            pytest.fail(f"HELM={configured} is not an executable", pytrace=False)
        return configured
    version = versions()["HELM_VERSION"]
    path = cache_dir() / f"helm-{version}" / "helm"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"helm {version} is not built ({path} missing): run `make tools` (builds it from "
            "the Go module proxy, ~2 min once; needs Go >= 1.21), or set HELM to a helm binary",
            pytrace=False,
        )
    return str(path)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm (no cluster access: lint and template only); the caller checks the result."""
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False
    )


# An etcd to point at: the chart refuses to install with neither etcd.endpoints nor the
# bundled etcd (test_an_install_without_etcd_is_refused).
ETCD: Doc = {"etcd": {"endpoints": ["http://10.0.0.1:2379"]}}


def render(values: Doc, tmp_path: Path, release: str = "er", namespace: str = "reg") -> list[Doc]:
    """`helm template` with `values` (ETCD unless they set `etcd`), parsed into documents
    (fails the test on an error)."""
    values_file = tmp_path / f"values-{release}.yaml"
    values_file.write_text(yaml.safe_dump({**ETCD, **values}))
    proc = helm("template", release, str(CHART), "--namespace", namespace, "-f", str(values_file))
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name_suffix: str = "") -> Doc:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def operator_container(docs: list[Doc]) -> Doc:
    deployment = one(docs, "Deployment", "etcd-registrar")
    container: Doc = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def env_of(container: Doc) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def dump(docs: list[Doc]) -> str:
    return yaml.safe_dump_all(docs)


# --------------------------------------------------------------------------- value sets


def tls_auth_values() -> Doc:
    return {
        "etcd": {
            "endpoints": ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
            "timeout": 3,
            "tls": {
                "ca": {"secretName": "etcd-ca", "key": "ca.pem"},
                "client": {"secretName": "etcd-client"},
            },
            "auth": {"username": "registrar", "password": {"secretName": "etcd-auth"}},
        }
    }


def secure_etcd_doc_values() -> Doc:
    """The chart values docs/secure-etcd.md shows, as written."""
    page = (REPO_ROOT / "docs" / "secure-etcd.md").read_text()
    section = page.split("## How the chart mounts credentials", 1)[1]
    values: Doc = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    return values


def check_default(docs: list[Doc], _: list[str]) -> None:
    deployment = one(docs, "Deployment", "etcd-registrar")
    # HA: a standby beside the leader, a new replica up before an old one goes, never the
    # last one drained, replicas spread over nodes, an owner id of the release's own
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    spread = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = spread["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert env_of(operator_container(docs))["ETCD_REGISTRAR_OWNER_ID"] == "reg-er"
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(docs)
    assert container["image"] == "ghcr.io/etcd-registrar/etcd-registrar:0.1.0"
    assert "args" not in container  # settings are in the environment
    assert "ETCD_REGISTRAR_NAMESPACE" not in env_of(container)  # cluster-wide
    env = env_of(container)
    assert env["ETCD_REGISTRAR_DEFAULT_TTL"] == "10"
    assert env["ETCD_REGISTRAR_DEFAULT_FORMAT"] == "address"
    assert env["ETCD_REGISTRAR_HEALTH_PORT"] == "8081"
    assert env["ETCD_REGISTRAR_METRICS_PORT"] == "8080"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsUser"] == 65532
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # noqa: S108
    assert one(docs, "Service", "-metrics")["spec"]["ports"][0]["targetPort"] == "metrics"
    crd = one(docs, "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not by_kind(docs, "Role")
    # `helm test` runs doctor as the operator: its ServiceAccount, environment and volumes.
    hook = one(docs, "Pod", "-doctor")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (doctor,) = hook["spec"]["containers"]
    assert doctor["command"] == ["etcd-registrar", "doctor"]
    assert doctor["env"] == container["env"] and doctor["image"] == container["image"]
    assert doctor["volumeMounts"] == container["volumeMounts"]
    assert hook["spec"]["serviceAccountName"] == pod["serviceAccountName"]
    assert hook["spec"]["securityContext"] == pod["securityContext"]


def check_namespaced(docs: list[Doc], namespaces: list[str]) -> None:
    container = operator_container(docs)
    # In the environment, which `kubectl exec ... etcd-registrar doctor` inherits; not args.
    assert "args" not in container
    assert env_of(container)["ETCD_REGISTRAR_NAMESPACE"] == ",".join(namespaces)
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(namespaces)
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == sorted(
        namespaces
    )
    # The operator's only ClusterRole holds what kopf reads cluster-wide; no pods, no events.
    cluster_role = one(docs, "ClusterRole", "-cluster")
    resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert resources == {"customresourcedefinitions", "namespaces"}


def check_tls_auth(docs: list[Doc], _: list[str]) -> None:
    container = operator_container(docs)
    env = env_of(container)
    mount = "/etc/etcd-registrar/etcd"
    assert env["ETCD_REGISTRAR_ETCD_ENDPOINTS"] == "https://10.0.0.1:2379,https://10.0.0.2:2379"
    assert env["ETCD_REGISTRAR_ETCD_CA"] == f"{mount}/ca.crt"
    assert env["ETCD_REGISTRAR_ETCD_CERT"] == f"{mount}/tls.crt"
    assert env["ETCD_REGISTRAR_ETCD_KEY"] == f"{mount}/tls.key"
    assert env["ETCD_REGISTRAR_ETCD_USERNAME"] == "registrar"
    assert env["ETCD_REGISTRAR_ETCD_PASSWORD_FILE"] == f"{mount}/password"
    assert env["ETCD_REGISTRAR_ETCD_TIMEOUT"] == "3"
    # Secrets reach the pod as files only, never as environment variables.
    assert not any("valueFrom" in e for e in container["env"])
    assert {"name": "etcd-credentials", "mountPath": mount, "readOnly": True} in container[
        "volumeMounts"
    ]
    hook = one(docs, "Pod", "-doctor")["spec"]
    assert hook["containers"][0]["volumeMounts"] == container["volumeMounts"]
    assert hook["volumes"] == one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    sources = next(v for v in volumes if v["name"] == "etcd-credentials")["projected"]["sources"]
    assert [s["secret"] for s in sources] == [
        {"name": "etcd-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}]},
        {
            "name": "etcd-client",
            "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
        },
        {"name": "etcd-auth", "items": [{"key": "password", "path": "password"}]},
    ]


def check_secure_etcd_doc(docs: list[Doc], _: list[str]) -> None:
    env = env_of(operator_container(docs))
    mount = "/etc/etcd-registrar/etcd"
    endpoints = secure_etcd_doc_values()["etcd"]["endpoints"]
    assert env["ETCD_REGISTRAR_ETCD_ENDPOINTS"] == ",".join(endpoints)
    assert len(endpoints) > 1 and all(e.startswith("https://") for e in endpoints)
    assert env["ETCD_REGISTRAR_ETCD_CA"] == f"{mount}/ca.crt"
    assert env["ETCD_REGISTRAR_ETCD_CERT"] == f"{mount}/tls.crt"
    assert env["ETCD_REGISTRAR_ETCD_PASSWORD_FILE"] == f"{mount}/password"


def check_monitoring(docs: list[Doc], _: list[str]) -> None:
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "-metrics")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
        p["name"] for p in service["spec"]["ports"]
    ]
    # The alerts and the dashboard arrive as the chart's files have them (checked by
    # tests/unit/test_chart_monitoring.py).
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    dashboard = one(docs, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Platform"}
    assert json.loads(dashboard["data"]["etcd-registrar.json"]) == json.loads(
        (CHART / "files" / "dashboard.json").read_text()
    )
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert operator_container(docs)["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    template = one(docs, "Deployment")["spec"]["template"]["metadata"]
    assert template["annotations"] == {"example.com/team": "platform"}
    assert template["labels"]["team"] == "platform"


def check_bundled_etcd(docs: list[Doc], _: list[str]) -> None:
    env = env_of(operator_container(docs))
    assert env["ETCD_REGISTRAR_ETCD_ENDPOINTS"] == "http://er-etcd-registrar-etcd.reg.svc:2379"
    assert env["ETCD_REGISTRAR_DEFAULT_FORMAT"] == "json"
    assert env["ETCD_REGISTRAR_DEFAULT_PREFIX"] == "/registry"
    assert env["ETCD_REGISTRAR_LOG_FORMAT"] == "json"
    assert env["ETCD_REGISTRAR_DRY_RUN"] == "true"
    assert env["ETCD_REGISTRAR_POD_SELECTOR"] == "registry=etcd"
    assert env["ETCD_REGISTRAR_METRICS_PORT"] == "0"
    etcd = one(docs, "Deployment", "-etcd")
    assert etcd["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    # Scheduling values apply to both pods alike.
    for deployment in (etcd, one(docs, "Deployment", "etcd-registrar")):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == SCHEDULING["nodeSelector"]
        assert pod["tolerations"] == SCHEDULING["tolerations"]
        assert pod["affinity"] == SCHEDULING["affinity"]
    assert one(docs, "Service", "-etcd")["spec"]["ports"][0]["port"] == 2379
    # The operator's selector must not pick up the etcd pod (and the reverse).
    operator_selector = one(docs, "Deployment", "etcd-registrar")["spec"]["selector"]
    assert operator_selector != etcd["spec"]["selector"]
    assert not by_kind(docs, "CustomResourceDefinition")  # crds.enabled=false
    assert not any(d["metadata"]["name"].endswith("-metrics") for d in by_kind(docs, "Service"))
    # The unauthenticated etcd admits, on its client port, the operator and the listed
    # consumers only (R2-13).
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"] == etcd["spec"]["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "client", "protocol": "TCP"}]
    doctor = one(docs, "Pod", "-doctor")["metadata"]["labels"]
    operator, test_pod, *consumers = ingress["from"]
    assert operator == {"podSelector": operator_selector}
    assert test_pod["podSelector"]["matchLabels"].items() <= doctor.items()
    assert consumers == CONSUMERS


CONSUMERS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}}]


EXTRAS: Doc = {
    "replicaCount": 1,
    "priorityClassName": "system-cluster-critical",
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
        },
        {
            "maxSkew": 2,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"team": "platform"}},
        },
    ],
    "extraVolumes": [{"name": "ca-bundle", "configMap": {"name": "ca-bundle"}}],
    "extraVolumeMounts": [{"name": "ca-bundle", "mountPath": "/etc/ssl/extra", "readOnly": True}],
    "extraEnv": [{"name": "SSL_CERT_DIR", "value": "/etc/ssl/extra"}],
}


def check_extras(docs: list[Doc], _: list[str]) -> None:
    deployment = one(docs, "Deployment", "etcd-registrar")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    own, given = pod["topologySpreadConstraints"]
    assert own == {
        **EXTRAS["topologySpreadConstraints"][0],
        "labelSelector": deployment["spec"]["selector"],
    }
    assert given == EXTRAS["topologySpreadConstraints"][1]
    assert EXTRAS["extraVolumes"][0] in pod["volumes"]
    container = operator_container(docs)
    assert EXTRAS["extraVolumeMounts"][0] in container["volumeMounts"]
    assert env_of(container)["SSL_CERT_DIR"] == "/etc/ssl/extra"
    # One replica: a budget could only block drains.
    assert not by_kind(docs, "PodDisruptionBudget")


SCHEDULING: Doc = {
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "preference": {
                        "matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                        ]
                    },
                }
            ]
        }
    },
}


VALUE_SETS: dict[str, tuple[Callable[[list[str]], Doc], Callable[[list[Doc], list[str]], None]]] = {
    "default": (lambda _: {}, check_default),
    "namespaced": (lambda namespaces: {"watchNamespaces": namespaces}, check_namespaced),
    "tls-auth": (lambda _: tls_auth_values(), check_tls_auth),
    # docs/secure-etcd.md's example: a TLS cluster of three members by name (audit row 1.1)
    "secure-etcd-doc": (lambda _: secure_etcd_doc_values(), check_secure_etcd_doc),
    "servicemonitor-pdb": (
        lambda _: {
            "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "additionalLabels": {"release": "prometheus"}},
            "dashboards": {"enabled": True, "annotations": {"grafana_folder": "Platform"}},
            "podDisruptionBudget": {"enabled": True},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
            **SCHEDULING,
            "podAnnotations": {"example.com/team": "platform"},
            "podLabels": {"team": "platform"},
        },
        check_monitoring,
    ),
    "extras": (lambda _: EXTRAS, check_extras),
    "bundled-etcd": (
        lambda _: {
            "etcd": {"enabled": True, "networkPolicy": {"clients": CONSUMERS}},
            "crds": {"enabled": False},
            "metrics": {"enabled": False},
            "format": "json",
            "prefix": "/registry",
            "ttl": 30,
            "resync": "1m",
            "ownerId": "cluster-a",
            "logFormat": "json",
            "dryRun": True,
            "podSelector": "registry=etcd",
            **SCHEDULING,
        },
        check_bundled_etcd,
    ),
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def other_namespace(cluster: Cluster) -> Iterator[str]:
    name = cluster.create_namespace("chart-other")
    yield name
    cluster.delete_namespace(name)


def server_dry_run(cluster: Cluster, docs: list[Doc]) -> None:
    """Every document through the API server's validation and admission, nothing stored."""
    # prometheus-operator's CRDs are not installed: see the top of this module. The `helm
    # test` Pod goes through restricted_pod_dry_run (its ServiceAccount is not created).
    skipped = {"ServiceMonitor", "PrometheusRule", "Pod"}
    checked = [d for d in docs if d["kind"] not in skipped]
    cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=dump(checked))


def restricted_pod_dry_run(cluster: Cluster, namespace: str, workload: Doc) -> None:
    """Create the pod of a Deployment, or a Pod, (dry run) in a namespace that enforces Pod
    Security "restricted": admission refuses it if the pod does not meet the profile."""
    template = workload["spec"].get("template", workload)
    spec = {**template["spec"], "serviceAccountName": "default"}  # the chart's SA is not created
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": workload["metadata"]["name"], "namespace": namespace},
        "spec": spec,
    }
    cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod))


# --------------------------------------------------------------------------- tests


def test_lint_is_clean(tmp_path: Path) -> None:
    sets = {"default": {}, **{k: make(["a", "b"]) for k, (make, _) in VALUE_SETS.items()}}
    for name, values in sets.items():
        values_file = tmp_path / f"{name}.yaml"
        values_file.write_text(yaml.safe_dump({**ETCD, **values}))
        proc = helm("lint", "--strict", str(CHART), "-f", str(values_file))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "[WARNING]" not in out and "[ERROR]" not in out, (
            f"helm lint ({name} values):\n{out}"
        )


def test_chart_crd_is_the_generated_one(tmp_path: Path) -> None:
    generated_rel = GENERATED_CRD.relative_to(REPO_ROOT)
    chart_rel = CHART_CRD.relative_to(REPO_ROOT)
    assert CHART_CRD.read_bytes() == GENERATED_CRD.read_bytes(), (
        f"{chart_rel} differs from the generated {generated_rel}: "
        f"run `make crds && cp {generated_rel} {chart_rel}`"
    )
    generated = yaml.safe_load(GENERATED_CRD.read_text())
    rendered = one(render({}, tmp_path), "CustomResourceDefinition")
    # Templating only adds labels and the keep annotation; the schema arrives unchanged.
    assert rendered["spec"] == generated["spec"]
    assert rendered["metadata"]["name"] == generated["metadata"]["name"]
    not_kept = one(render({"crds": {"keep": False}}, tmp_path), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (not_kept["metadata"].get("annotations") or {})
    assert not by_kind(render({"crds": {"enabled": False}}, tmp_path), "CustomResourceDefinition")


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_rendered_chart_passes_server_dry_run(
    cluster: Cluster,
    namespace: str,
    other_namespace: str,
    crd: None,
    tmp_path: Path,
    value_set: str,
) -> None:
    make_values, check = VALUE_SETS[value_set]
    watched = [namespace, other_namespace]
    docs = render(make_values(watched), tmp_path, namespace="reg")
    check(docs, watched)
    # Release namespace = the test namespace; it enforces Pod Security "restricted".
    docs = render(make_values(watched), tmp_path, namespace=namespace)
    cluster.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    server_dry_run(cluster, docs)
    for workload in by_kind(docs, "Deployment") + by_kind(docs, "Pod"):
        restricted_pod_dry_run(cluster, namespace, workload)


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_rendered_config_is_what_the_operator_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value_set: str
) -> None:
    """The container's env and args, parsed by the operator's own CLI and Settings: a renamed
    flag or a value the operator refuses fails here, not in a crash-looping pod."""
    make_values, _ = VALUE_SETS[value_set]
    values = make_values(["a", "b"])
    container = operator_container(render(values, tmp_path))
    extra = {e["name"] for e in values.get("extraEnv", [])}  # the user's own, not settings
    env = {k: v for k, v in env_of(container).items() if k not in extra}
    fields = {f"ETCD_REGISTRAR_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, f"not operator settings: {set(env) - fields}"
    for name in [n for n in os.environ if n.startswith("ETCD_REGISTRAR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        settings = load_settings(build_parser().parse_args(["run", *container.get("args", [])]))
    except SystemExit as exc:
        pytest.fail(f"the operator refuses the {value_set} rendering: {exc}")
    assert settings.health_port == 8081
    # `kubectl exec ... etcd-registrar doctor` (or ls) gets the env but not the args: it must
    # see the same configuration (args carry only extraArgs, none in these value sets).
    assert "args" not in container
    for command in ("doctor", "ls"):
        assert load_settings(build_parser().parse_args([command])) == settings, command
    if value_set == "namespaced":
        assert settings.namespace == ["a", "b"]
    if value_set == "tls-auth":
        assert settings.etcd_password_file == Path("/etc/etcd-registrar/etcd/password")
        assert settings.etcd_endpoints == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
    if value_set == "secure-etcd-doc":
        assert settings.etcd_endpoints == secure_etcd_doc_values()["etcd"]["endpoints"]
    if value_set == "bundled-etcd":
        assert (settings.resync, settings.default_ttl, settings.dry_run) == (60.0, 30, True)
        assert (settings.owner_id, settings.log_format) == ("cluster-a", "json")


def owner_id_rendered(cluster: Cluster, namespace: str, *args: str) -> str:
    """The owner id the chart gives release `r` in `namespace`, rendered with the cluster's
    answers to its lookups (`--dry-run=server`), as `helm install`/`upgrade` renders it."""
    proc = subprocess.run(
        [
            *(helm_binary(), "template", "r", str(CHART), "-n", namespace, "--dry-run=server"),
            *("--set", "etcd.endpoints={http://127.0.0.1:2379}", *args),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ | {"KUBECONFIG": str(cluster.kubeconfig)},
    )
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return env_of(operator_container(docs))["ETCD_REGISTRAR_OWNER_ID"]


def test_the_default_owner_id_is_unique_per_cluster_and_kept_by_upgrades(
    cluster: Cluster, namespace: str
) -> None:
    """Review 2, R2-4: the same release installed in two clusters sharing one etcd gets two
    owner ids (the kube-system namespace UID's first 8 characters); an upgrade keeps the id
    the installed Deployment runs with, so the registry is never flushed by one."""
    uid = cluster.kubectl("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}")
    assert owner_id_rendered(cluster, namespace) == f"{namespace}-r-{uid[:8]}"
    assert owner_id_rendered(cluster, namespace, "--set", "ownerId=mine") == "mine"
    installed = deployment_manifest("r-etcd-registrar", 0)
    installed["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "ETCD_REGISTRAR_OWNER_ID", "value": "installed-id"}
    ]
    cluster.apply(installed, namespace)
    assert owner_id_rendered(cluster, namespace) == "installed-id"


def test_the_chart_names_the_installation_and_its_configuration_generation(
    tmp_path: Path,
) -> None:
    """A helm upgrade is a newer configuration of the same installation (R2-3)."""
    env = env_of(operator_container(render({}, tmp_path)))
    assert env["ETCD_REGISTRAR_INSTALLATION"] == "reg/er"
    assert env["ETCD_REGISTRAR_CONFIG_GENERATION"] == "1"  # the Helm revision


def test_pod_security_dry_run_would_catch_a_violation(cluster: Cluster, namespace: str) -> None:
    """The restricted-profile check above is real: a root pod is refused the same way."""
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    root = deployment_manifest("root")
    root["metadata"]["name"] = "root"
    with pytest.raises(KubectlError, match="violates PodSecurity"):
        restricted_pod_dry_run(cluster, namespace, root)


@pytest.mark.parametrize(
    ("values", "fields"),
    [
        (
            {"ttl": 1, "format": "nope", "logFormat": "xml"},
            ["/ttl", "minimum", "/format", "/logFormat"],
        ),
        ({"ttl": 3601, "health": {"port": 70000}}, ["/ttl", "maximum", "/health/port"]),
        ({"ttl": "10", "dryRun": "yes"}, ["/ttl", "/dryRun"]),
        ({"replicaCount": -1}, ["/replicaCount"]),
        ({"tll": 10}, ["'tll' not allowed"]),
        ({"ownerId": "has space"}, ["/ownerId"]),
        ({"etcd": {"endpoints": ["http://a:2379,http://b:2379"]}}, ["/etcd/endpoints/0"]),
        (
            {"etcd": {**ETCD["etcd"], "auth": {"password": {"secretName": "etcd-auth"}}}},
            ["etcd.auth.username is required"],
        ),
        (
            {"etcd": {"endpoints": ["http://10.0.0.1:2379"], "tls": {"ca": {"secretName": "ca"}}}},
            ["not https://"],
        ),
        ({"serviceMonitor": {"enabled": True}, "metrics": {"enabled": False}}, ["metrics.enabled"]),
        ({"prometheusRule": {"enabled": True}, "metrics": {"enabled": False}}, ["metrics.enabled"]),
        ({"topologySpreadConstraints": [{"maxSkew": 1}]}, ["/topologySpreadConstraints/0"]),
        ({"extraVolumeMounts": [{"name": "x"}]}, ["/extraVolumeMounts/0", "mountPath"]),
    ],
    ids=[
        "ttl-format-logformat",
        "ranges",
        "types",
        "replicas",
        "typo",
        "owner",
        "endpoints",
        "user-missing",
        "tls-on-http",
        "monitor-without-metrics",
        "rules-without-metrics",
        "spread-incomplete",
        "mount-without-path",
    ],
)
def test_bad_values_are_refused_with_the_field_named(
    tmp_path: Path, values: Doc, fields: list[str]
) -> None:
    values_file = tmp_path / "bad.yaml"
    values_file.write_text(yaml.safe_dump({**ETCD, **values}))
    proc = helm("template", "er", str(CHART), "-f", str(values_file))
    assert proc.returncode != 0, f"accepted {values}"
    for field in fields:
        assert field in proc.stderr, f"{field!r} not named in:\n{proc.stderr}"


def test_an_install_without_etcd_is_refused() -> None:
    """The chart's defaults name no etcd: rather than pods that never turn Ready, helm
    refuses, and says what to set."""
    proc = helm("template", "er", str(CHART))
    assert proc.returncode != 0, "installed with no etcd to write to"
    assert "etcd.endpoints is required" in proc.stderr, proc.stderr
    assert "etcd.enabled=true" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- RBAC


RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@pytest.fixture
def installed_rbac(cluster: Cluster, namespace: str) -> Iterator[Callable[[Doc, Path], str]]:
    """Apply the chart's ServiceAccount and RBAC for real (release named after the test
    namespace, so cluster-scoped names are unique); returns the ServiceAccount's name.
    Cluster-scoped objects are deleted afterwards."""
    release = namespace

    def install(values: Doc, tmp_path: Path) -> str:
        docs = render(values, tmp_path, release=release, namespace=namespace)
        rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
        cluster.kubectl("apply", "-f", "-", input=dump(rbac))
        name: str = one(rbac, "ServiceAccount")["metadata"]["name"]
        return name

    yield install
    cluster.kubectl(
        "delete",
        "clusterrole,clusterrolebinding",
        "-l",
        f"app.kubernetes.io/instance={release}",
        "--ignore-not-found",
        "--wait=false",
    )


def can_i(cluster: Cluster, user: str, verb: str, resource: str, *scope: str) -> bool:
    """`kubectl auth can-i` as `user`; `resource` may name a subresource: "pods/status"."""
    resource, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={user}", *scope]
    if sub:
        args.append(f"--subresource={sub}")
    return cluster.kubectl(*args, check=False).strip() == "yes"


def can_get_namespace(cluster: Cluster, user: str, name: str) -> bool:
    answer = cluster.kubectl(
        "auth", "can-i", "get", f"namespaces/{name}", f"--as={user}", check=False
    )
    return answer.strip() == "yes"


ALLOWED = [
    ("list", "pods"),
    ("watch", "pods"),
    ("create", "events"),
    ("list", "serviceregistrations.etcd-registrar.io"),
    ("watch", "serviceregistrations.etcd-registrar.io"),
    ("patch", "serviceregistrations.etcd-registrar.io/status"),
    ("patch", "pods/status"),  # the readiness gate's condition (readinessGate.enabled)
]
DENIED = [
    ("get", "pods"),  # unused grants (GRANT_USES)
    ("patch", "events"),
    ("create", "events.events.k8s.io"),
    ("get", "serviceregistrations.etcd-registrar.io"),
    ("get", "serviceregistrations.etcd-registrar.io/status"),
    ("patch", "pods"),
    ("update", "pods"),
    ("delete", "pods"),
    ("create", "pods"),
    ("update", "pods/status"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("patch", "serviceregistrations.etcd-registrar.io"),
    ("delete", "serviceregistrations.etcd-registrar.io"),
    ("list", "configmaps"),
    ("delete", "events"),
]


Grant = tuple[str, str, str]  # (API group, resource[/subresource], verb)

# Every grant the chart gives the operator, and the call that needs it: (module, text of the
# call in its source). A grant with no row here fails test_every_grant_is_used, and so does
# a row whose call is gone from the code.
GRANT_USES: dict[Grant, tuple[ModuleType, str]] = {
    ("", "pods", "list"): (kube, "self._pods_path(namespace),"),
    ("", "pods", "watch"): (kube, "watch=True,"),
    ("", "pods/status", "patch"): (
        kube,
        'path = f"/api/v1/namespaces/{namespace}/pods/{name}/status"',
    ),
    ("", "events", "create"): (kube, '"POST", f"/api/v1/namespaces/{meta[\'namespace\']}/events"'),
    # kopf's own Events go to core/v1 too (kopf's references.EVENTS is Selector('v1', 'events')).
    (GROUP, PLURAL, "list"): (kube, 'self.call("GET", f"/apis/{GROUP}/{VERSION}{scope}/{PLURAL}")'),
    (GROUP, PLURAL, "watch"): (handlers, "@kopf.on.event(GROUP, VERSION, PLURAL)"),
    (GROUP, f"{PLURAL}/status", "patch"): (kube, "/{PLURAL}/{name}/status"),
    # kopf's observer of CRDs; namespaces: the ranges an administrator assigns (tenancy).
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): (observation, ".CRDS)"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): (observation, ".CRDS)"),
    ("", "namespaces", "list"): (handlers, '@kopf.on.event("", "v1", "namespaces")'),
    ("", "namespaces", "watch"): (handlers, '@kopf.on.event("", "v1", "namespaces")'),
    # the cluster's identity: the kube-system namespace only (resourceNames)
    ("", "namespaces", "get"): (kube, '"/api/v1/namespaces/kube-system"'),
}


def operator_grants(docs: list[Doc], sa: str) -> set[Grant]:
    """What the chart grants the operator's ServiceAccount: the rules of every (Cluster)Role
    a binding gives it, one (group, resource, verb) each."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"].endswith("Role")}
    grants: set[Grant] = set()
    for binding in (d for d in docs if d["kind"].endswith("RoleBinding")):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in binding["subjects"]):
            continue
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for rule in role["rules"]:
            for group, resource, verb in itertools.product(
                rule["apiGroups"], rule["resources"], rule["verbs"]
            ):
                grants.add((group, resource, verb))
    return grants


def doctor_rights(namespaces: list[str], gate: bool) -> set[Grant]:
    """The rights `etcd-registrar doctor` checks, as grants."""
    return {
        (r.group, f"{r.resource}/{r.subresource}" if r.subresource else r.resource, r.verb)
        for r, _ in doctor.needed(namespaces, gate)
    }


def test_every_grant_is_used() -> None:
    for grant, (module, call) in GRANT_USES.items():
        source = Path(module.__file__ or "").read_text()
        assert call in source, f"{grant}: {call!r} is no longer in {module.__name__}"


@pytest.mark.parametrize("gate", [True, False], ids=["gate", "no-gate"])
@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide", "namespaced"])
def test_the_chart_grants_only_what_the_code_uses(
    tmp_path: Path, namespaced: bool, gate: bool
) -> None:
    """Each rendered grant has a call that uses it (GRANT_USES), and the chart grants
    exactly what doctor checks: a grant added without a use fails here."""
    namespaces = ["a", "b"] if namespaced else []
    values = {"watchNamespaces": namespaces, "readinessGate": {"enabled": gate}}
    docs = render(values, tmp_path)
    grants = operator_grants(docs, one(docs, "ServiceAccount")["metadata"]["name"])
    unused = grants - set(GRANT_USES)
    assert not unused, f"granted, but no code uses it (or add it to GRANT_USES): {unused}"
    assert grants == doctor_rights(namespaces, gate)


def assert_permissions(cluster: Cluster, user: str, *scope: str) -> None:
    # RBAC reaches the authorizer through a watch: wait for the first grant to be visible.
    wait_for(lambda: can_i(cluster, user, "list", "pods", *scope), 10, message="RBAC visible")
    allowed = {f"{v} {r}": can_i(cluster, user, v, r, *scope) for v, r in ALLOWED}
    denied = {f"{v} {r}": can_i(cluster, user, v, r, *scope) for v, r in DENIED}
    assert all(allowed.values()), f"{user} {scope}: not allowed: {allowed}"
    assert not any(denied.values()), f"{user} {scope}: allowed but must not be: {denied}"


def test_rbac_cluster_wide_is_least_privilege(
    cluster: Cluster, namespace: str, crd: None, installed_rbac: Any, tmp_path: Path
) -> None:
    user = f"system:serviceaccount:{namespace}:{installed_rbac({}, tmp_path)}"
    assert_permissions(cluster, user, "-n", namespace)
    assert_permissions(cluster, user, "--all-namespaces")
    assert can_i(cluster, user, "watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can_i(cluster, user, "patch", "customresourcedefinitions.apiextensions.k8s.io")
    # namespaces are read for the ranges an administrator assigns (tenancy), never written
    assert can_i(cluster, user, "watch", "namespaces")
    assert not can_i(cluster, user, "patch", "namespaces")
    assert can_get_namespace(cluster, user, "kube-system")  # the cluster's identity
    assert not can_get_namespace(cluster, user, "default")


def test_rbac_without_the_readiness_gate_cannot_patch_pod_status(
    cluster: Cluster, namespace: str, crd: None, installed_rbac: Any, tmp_path: Path
) -> None:
    sa = installed_rbac({"readinessGate": {"enabled": False}}, tmp_path)
    user = f"system:serviceaccount:{namespace}:{sa}"
    wait_for(lambda: can_i(cluster, user, "list", "pods"), 10, message="RBAC visible")
    assert not can_i(cluster, user, "patch", "pods/status", "--all-namespaces")


def test_rbac_namespaced_mode_stays_in_its_namespaces(
    cluster: Cluster, namespace: str, crd: None, installed_rbac: Any, tmp_path: Path
) -> None:
    sa = installed_rbac({"watchNamespaces": [namespace]}, tmp_path)
    user = f"system:serviceaccount:{namespace}:{sa}"
    assert_permissions(cluster, user, "-n", namespace)
    for verb, resource in ALLOWED:
        assert not can_i(cluster, user, verb, resource, "-n", "default"), f"{verb} {resource}"
        assert not can_i(cluster, user, verb, resource, "--all-namespaces"), f"{verb} {resource}"
    assert can_i(cluster, user, "watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert can_i(cluster, user, "watch", "namespaces")
    assert can_get_namespace(cluster, user, "kube-system")  # the cluster's identity


def test_aggregated_roles_let_namespace_users_manage_registrations(
    cluster: Cluster, namespace: str, crd: None, installed_rbac: Any, tmp_path: Path
) -> None:
    """Users bound to the built-in edit or view role in a namespace get ServiceRegistrations
    with it (the aggregation controller copies the chart's rules into those roles), and
    nothing of their status, nor anything in another namespace."""
    installed_rbac({}, tmp_path)
    for user, role in (("alice", "edit"), ("bob", "view")):
        cluster.kubectl(
            "create",
            "rolebinding",
            f"{user}-{role}",
            f"--clusterrole={role}",
            f"--user={user}",
            "-n",
            namespace,
        )
    sreg = "serviceregistrations.etcd-registrar.io"
    scope = ("-n", namespace)
    wait_for(
        lambda: (
            can_i(cluster, "alice", "create", sreg, *scope)
            and can_i(cluster, "bob", "list", sreg, *scope)
        ),
        30,
        message="the chart's rules aggregated into edit and view",
    )
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        assert can_i(cluster, "alice", verb, sreg, *scope), f"edit cannot {verb}"
    for verb in ("get", "list", "watch"):
        assert can_i(cluster, "bob", verb, sreg, *scope), f"view cannot {verb}"
    for verb in ("create", "patch", "delete"):
        assert not can_i(cluster, "bob", verb, sreg, *scope), f"view can {verb}"
    assert not can_i(cluster, "alice", "patch", f"{sreg}/status", *scope)
    assert not can_i(cluster, "alice", "list", sreg, "-n", "default")


def test_operator_runs_with_exactly_the_charts_rbac(
    cluster: Cluster, namespace: str, crd: None, installed_rbac: Any, tmp_path: Path
) -> None:
    """The grants are enough, not just small: the real operator, authenticated as the
    chart's ServiceAccount (namespaced mode, so it cannot touch other tests' pods), registers
    a ready pod, posts a Warning Event for a bad annotation, and logs no permission error."""
    sa = installed_rbac({"watchNamespaces": [namespace]}, tmp_path)
    kubeconfig = cluster.write_service_account_kubeconfig(namespace, sa, tmp_path / "sa.kubeconfig")
    as_sa = dataclasses.replace(cluster, kubeconfig=kubeconfig)
    prefix = f"/chart-rbac-{namespace}"
    operator = OperatorProcess(as_sa, namespace, "--resync", "2s", "--default-prefix", prefix)
    operator.start()
    try:
        good = {"etcd-registrar.io/service": "web"}
        cluster.create_deployment(namespace, deployment_manifest("web", 1, annotations=good))
        bad = {"etcd-registrar.io/service": "bad", "etcd-registrar.io/port": "nope"}
        cluster.create_deployment(namespace, deployment_manifest("bad", 1, annotations=bad))
        (pod,) = cluster.wait_deployment_serving(namespace, "web", 1)
        wait_for(
            lambda: (
                registry_keys(cluster.etcd_endpoints, f"{prefix}/web/")
                == {f"{prefix}/web/{pod.name}": f"{pod.ip}:80"}
            ),
            30,
            message="ready pod registered by the operator running as the chart's SA",
        )

        def warning_event() -> bool:
            events = cluster.get_json("events", "-n", namespace)["items"]
            return any(
                e["type"] == "Warning" and e["involvedObject"]["name"].startswith("bad-")
                for e in events
            )

        wait_for(warning_event, 30, message="Warning Event about the bad port annotation")
        gated = deployment_manifest("gated", 1, annotations={"etcd-registrar.io/service": "gated"})
        gated["spec"]["template"]["spec"]["readinessGates"] = [{"conditionType": GATE}]
        cluster.create_deployment(namespace, gated)
        cluster.wait_deployment_serving(namespace, "gated", 1)  # Ready: the gate is True
        log = operator.tail(400)
        for marker in ("Forbidden", "forbidden", "Not enough permissions"):
            assert marker not in log, f"{marker!r} in the operator log:\n{log}"
    finally:
        operator.stop()


def test_a_disabled_gate_is_a_warning_not_a_hang(
    cluster: Cluster, namespace: str, crd: None, installed_rbac: Any, tmp_path: Path
) -> None:
    """readinessGate.enabled=false: no pods/status permission, and a gated pod is told why it
    never turns Ready instead of waiting silently."""
    values = {"watchNamespaces": [namespace], "readinessGate": {"enabled": False}}
    sa = installed_rbac(values, tmp_path)
    kubeconfig = cluster.write_service_account_kubeconfig(namespace, sa, tmp_path / "sa.kubeconfig")
    as_sa = dataclasses.replace(cluster, kubeconfig=kubeconfig)
    prefix = f"/chart-nogate-{namespace}"
    operator = OperatorProcess(
        as_sa, namespace, "--no-readiness-gate", "--resync", "2s", "--default-prefix", prefix
    )
    operator.start()
    try:
        gated = deployment_manifest("gated", 1, annotations={"etcd-registrar.io/service": "gated"})
        gated["spec"]["template"]["spec"]["readinessGates"] = [{"conditionType": GATE}]
        cluster.create_deployment(namespace, gated)

        def disabled_event() -> dict[str, Any] | None:
            events = cluster.get_json("events", "-n", namespace)["items"]
            return next((e for e in events if e["reason"] == "ReadinessGateDisabled"), None)

        event = wait_for(disabled_event, 30, message="ReadinessGateDisabled Warning Event")
        assert event["type"] == "Warning"
        assert "disabled in this installation" in event["message"]
        (pod,) = cluster.pods_of_deployment(namespace, "gated")
        assert not pod.ready
        log = operator.tail(400)
        for marker in ("Forbidden", "forbidden"):
            assert marker not in log, f"{marker!r} in the operator log:\n{log}"
    finally:
        operator.stop()


POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


@pytest.fixture
def admission_policy(cluster: Cluster, namespace: str) -> Iterator[Callable[[Path], None]]:
    """Apply the chart's ValidatingAdmissionPolicy and its binding (release named after the
    test namespace); both are deleted afterwards."""

    def install(tmp_path: Path) -> None:
        values = {"admissionPolicy": {"enabled": True}}
        docs = render(values, tmp_path, release=namespace, namespace=namespace)
        cluster.kubectl(
            "apply", "-f", "-", input=dump([d for d in docs if d["kind"] in POLICY_KINDS])
        )

    yield install
    cluster.kubectl(
        "delete",
        ",".join(k.lower() for k in POLICY_KINDS),
        "-l",
        f"app.kubernetes.io/instance={namespace}",
        "--ignore-not-found",
    )


def test_admission_policy_lets_the_operator_patch_only_its_condition(
    cluster: Cluster,
    namespace: str,
    installed_rbac: Any,
    admission_policy: Callable[[Path], None],
    tmp_path: Path,
) -> None:
    """RBAC lets the operator's ServiceAccount patch any part of a pod's status; with
    admissionPolicy.enabled the API server refuses all but the etcd-registrar.io/registered
    condition (R2-12). The patches are the operator's own (kube.Kube, authenticated as the
    chart's ServiceAccount). Others (the kubelet, an admin) are not affected."""
    sa = installed_rbac({}, tmp_path)
    kubeconfig = cluster.write_service_account_kubeconfig(namespace, sa, tmp_path / "sa.kc")
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    as_sa = kube.Kube(functools.partial(kube.login, kubeconfig))
    core = kubernetes.client.CoreV1Api(api)
    cluster.create_deployment(namespace, deployment_manifest("web", 1))
    (pod,) = cluster.wait_deployment_serving(namespace, "web", 1)
    uid = cluster.get_json("pod", pod.name, "-n", namespace)["metadata"]["uid"]

    def set_condition(kind: str, message: str) -> None:
        condition = {"type": kind, "status": "True", "reason": "Test", "message": message}
        asyncio.run(as_sa.patch_pod_condition(namespace, pod.name, uid, condition))

    def refusal(patch: Callable[[], object]) -> str:
        with pytest.raises(kubernetes.client.ApiException) as refused:
            patch()
        assert refused.value.status == 403, refused.value
        return str(refused.value.body)

    set_condition("example.com/other", "before the policy")  # RBAC alone allows it
    admission_policy(tmp_path)
    attempts = itertools.count()

    def other_condition_refused() -> str | None:
        try:  # a new message each time: a patch that changes nothing is not refused
            set_condition("example.com/other", f"attempt {next(attempts)}")
        except kube.KubeError as exc:
            return exc.message
        return None

    refused = wait_for(other_condition_refused, 30, message="the policy refuses the SA's patch")
    assert f"may change only the {GATE} condition" in refused, refused
    set_condition(GATE, "registered")  # the readiness gate's own condition goes through
    conditions = cluster.get_json("pod", pod.name, "-n", namespace)["status"]["conditions"]
    assert {"type": GATE, "message": "registered"}.items() <= next(
        c for c in conditions if c["type"] == GATE
    ).items()
    for body, field in (
        ({"status": {"phase": "Failed"}}, "status.phase"),
        ({"metadata": {"labels": {"hijacked": "yes"}}}, "metadata.labels"),
        ({"metadata": {"annotations": {"hijacked": "yes"}}}, "metadata.annotations"),
    ):
        patch = functools.partial(core.patch_namespaced_pod_status, pod.name, namespace, body)
        message = refusal(patch)
        assert field in message, message
    # Only the operator's ServiceAccount is bound: the cluster admin still may.
    cluster.kubectl(
        "patch",
        "pod",
        pod.name,
        "-n",
        namespace,
        "--subresource=status",
        "-p",
        json.dumps({"status": {"conditions": [{"type": "example.com/other", "status": "False"}]}}),
    )


def doctor_in_pod(cluster: Cluster, container: Doc, kubeconfig: Path) -> str:
    """`etcd-registrar doctor` as `kubectl exec` runs it in the operator pod: no flags, the
    container's environment and the ServiceAccount's credentials (the cluster's registry etcd
    stands in for the configured one). Its output; the exit status is in the last line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_REGISTRAR_")}
    env |= env_of(container) | {
        "KUBECONFIG": str(kubeconfig),
        "ETCD_REGISTRAR_ETCD_ENDPOINTS": cluster.etcd_endpoints,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "etcd_registrar", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == (0 if "all checks passed" in proc.stdout else 1), proc.stderr
    return proc.stdout


@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide", "namespaced"])
def test_doctor_in_the_pod_passes_with_the_charts_rbac(
    cluster: Cluster,
    namespace: str,
    crd: None,
    installed_rbac: Any,
    tmp_path: Path,
    namespaced: bool,
) -> None:
    """doctor checks what the operator needs (test_operator_runs_with_exactly_the_charts_rbac
    shows the chart grants enough) in the namespaces the operator watches: with the chart's
    grants and environment it passes in both modes, and asks for nothing more."""
    values: Doc = {"watchNamespaces": [namespace]} if namespaced else {}
    sa = installed_rbac(values, tmp_path)
    user = f"system:serviceaccount:{namespace}:{sa}"
    wait_for(lambda: can_i(cluster, user, "list", "pods", "-n", namespace), 10, message="RBAC")
    container = operator_container(render(values, tmp_path, release=namespace, namespace=namespace))
    kubeconfig = cluster.write_service_account_kubeconfig(namespace, sa, tmp_path / "sa.kc")
    out = doctor_in_pod(cluster, container, kubeconfig)
    assert out.splitlines()[-1] == "all checks passed", out
    scope = namespace if namespaced else "all namespaces"
    assert f"ok    can list pods in {scope}: allowed" in out
    assert "ok    can watch customresourcedefinitions.apiextensions.k8s.io in the cluster" in out
    assert "ok    can watch namespaces in the cluster" in out  # both modes (tenancy)


def test_doctor_catches_the_rights_only_kopf_uses(
    cluster: Cluster, namespace: str, crd: None, installed_rbac: Any, tmp_path: Path
) -> None:
    """Namespaced mode without the chart's small ClusterRole: the operator's namespaced calls
    are all allowed, but kopf could not watch CRDs and namespaces, nor the operator read its
    cluster's identity. doctor says so, and nothing else."""
    values: Doc = {"watchNamespaces": [namespace]}
    sa = installed_rbac(values, tmp_path)
    user = f"system:serviceaccount:{namespace}:{sa}"
    cluster.kubectl("delete", "clusterrolebinding", "-l", f"app.kubernetes.io/instance={namespace}")
    wait_for(
        lambda: (
            not can_i(cluster, user, "watch", "namespaces")
            and can_i(cluster, user, "list", "pods", "-n", namespace)
        ),
        10,
        message="RBAC without the cluster-scoped grants",
    )
    container = operator_container(render(values, tmp_path, release=namespace, namespace=namespace))
    kubeconfig = cluster.write_service_account_kubeconfig(namespace, sa, tmp_path / "sa.kc")
    out = doctor_in_pod(cluster, container, kubeconfig)
    failed = {line.split(":")[0] for line in out.splitlines() if line.startswith("FAIL  ")}
    assert failed == {
        "FAIL  can list customresourcedefinitions.apiextensions.k8s.io in the cluster",
        "FAIL  can watch customresourcedefinitions.apiextensions.k8s.io in the cluster",
        "FAIL  can list namespaces in the cluster",
        "FAIL  can watch namespaces in the cluster",
        "FAIL  can get namespaces kube-system in the cluster",
    }, out
    assert out.splitlines()[-1] == "5 checks failed, 1 skipped"  # the CRD schema check: no list


def install_notes(cluster: Cluster, namespace: str, values: Doc, tmp_path: Path) -> str:
    """The NOTES `helm install` prints for `values` (a client-side dry run)."""
    values_file = tmp_path / "values.yaml"
    # crds.enabled=false: the CRD exists already, unowned by a release (see values.yaml).
    values_file.write_text(json.dumps({"crds": {"enabled": False}, **values}))
    proc = helm(
        "install",
        "er",
        str(CHART),
        "--dry-run=client",
        f"--kubeconfig={cluster.kubeconfig}",
        f"--namespace={namespace}",
        "-f",
        str(values_file),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("NOTES:", 1)[1]


def test_notes_tell_how_to_opt_in_and_see_keys(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    notes = install_notes(cluster, namespace, {"etcd": {"enabled": True}}, tmp_path)
    assert "etcd-registrar.io/service" in notes
    assert "etcd-registrar ls" in notes and "etcdctl get" in notes
    assert f"http://er-etcd-registrar-etcd.{namespace}.svc:2379" in notes
    assert "crds.enabled=false" in notes


def test_notes_say_the_bundled_etcd_is_not_for_production(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    notes = install_notes(cluster, namespace, {"etcd": {"enabled": True}}, tmp_path)
    assert "NOT FOR PRODUCTION" in notes
    assert "A NetworkPolicy admits only the operator, its `helm test` pod;" in notes
    open_etcd = {"etcd": {"enabled": True, "networkPolicy": {"enabled": False}}}
    notes = install_notes(cluster, namespace, open_etcd, tmp_path)
    assert "WARNING: etcd.networkPolicy.enabled=false: any pod" in notes
    without = render({"etcd": {"enabled": True, "networkPolicy": {"enabled": False}}}, tmp_path)
    assert not by_kind(without, "NetworkPolicy")


@pytest.mark.parametrize(
    ("fmt", "prefix"), [*((f, "") for f in FORMATS), ("address", "/reg"), ("kratos", "/ms")]
)
def test_notes_etcdctl_command_finds_the_default_layouts_keys(
    cluster: Cluster, namespace: str, tmp_path: Path, fmt: Format, prefix: str
) -> None:
    """The etcdctl prefix in the notes covers the keys of the configured format and prefix
    (go-zero keys have no leading slash: `get --prefix /` missed them)."""
    values = {"etcd": {"endpoints": ["http://10.0.0.1:2379"]}, "format": fmt, "prefix": prefix}
    notes = install_notes(cluster, namespace, values, tmp_path)
    match = re.search(r'etcdctl --endpoints=\S+ get "([^"]*)" --prefix', notes)
    assert match, notes
    shown = match[1].replace("<service>", "goods")
    key_prefix = service_prefix("goods", fmt, prefix or None)
    assert key_prefix.startswith(shown), f"{fmt}: {shown!r} does not find {key_prefix!r}"
    assert shown, "an empty prefix lists the whole etcd"
