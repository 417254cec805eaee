"""`etcd-registrar doctor`: check what the operator needs, and say how to fix what is missing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

import kubernetes

from etcd_registrar import GROUP, PLURAL, VERSION
from etcd_registrar.config import Settings
from etcd_registrar.etcd import Etcd, EtcdError, EtcdUnavailable
from etcd_registrar.kube import REQUEST_TIMEOUT, load_config
from etcd_registrar.leases import owner_keys
from etcd_registrar.source import Defaults

CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FIX = (
    "etcd-registrar crds | kubectl apply -f -   "
    f"(or kubectl apply -f crds/{CRD_NAME}.yaml, or the Helm chart with crds.enabled=true)"
)


class Right(NamedTuple):
    verb: str
    group: str
    resource: str
    subresource: str = ""
    cluster_scoped: bool = False
    name: str = ""  # one object only (RBAC resourceNames)

    def label(self, namespace: str) -> str:
        resource = f"{self.resource}.{self.group}" if self.group else self.resource
        resource += f"/{self.subresource}" if self.subresource else ""
        resource += f" {self.name}" if self.name else ""
        where = "the cluster" if self.cluster_scoped else namespace or "all namespaces"
        return f"can {self.verb} {resource} in {where}"


# What the running operator asks the API server for, in each watched namespace (or in all):
# the pod watch (podwatch.py) and kopf's of ServiceRegistrations (a list, then a watch), the
# Events, the pod list of the sweep and the status patches (kube.py).
IN_SCOPE = [
    Right("list", "", "pods"),
    Right("watch", "", "pods"),
    Right("create", "", "events"),
    Right("list", GROUP, PLURAL),
    Right("watch", GROUP, PLURAL),
    Right("patch", GROUP, PLURAL, "status"),
]
# The readiness gate's condition on gated pods (gates.py), unless --no-readiness-gate.
GATE = Right("patch", "", "pods", "status")
# kopf's observers (kopf/_core/reactor/observation.py): CRDs in every mode, to notice
# resources appear and go; namespaces only when it watches a list of them (--namespace),
# to notice those being created or deleted. Cluster-wide it never lists namespaces.
CRDS = [
    Right("list", "apiextensions.k8s.io", "customresourcedefinitions", cluster_scoped=True),
    Right("watch", "apiextensions.k8s.io", "customresourcedefinitions", cluster_scoped=True),
]
# The cluster's identity (kube.py): the kube-system namespace's UID, read at start.
IDENTITY = Right("get", "", "namespaces", cluster_scoped=True, name="kube-system")
NAMESPACES = [
    Right("list", "", "namespaces", cluster_scoped=True),
    Right("watch", "", "namespaces", cluster_scoped=True),
]


def needed(namespaces: Sequence[str], readiness_gate: bool = True) -> list[tuple[Right, str]]:
    """Every right the operator needs with these --namespace values and --readiness-gate,
    and where ("" = all namespaces, or cluster-scoped)."""
    in_scope = IN_SCOPE + ([GATE] if readiness_gate else [])
    scoped = [(right, ns) for ns in namespaces or [""] for right in in_scope]
    cluster = [*CRDS, IDENTITY, *(NAMESPACES if namespaces else [])]
    return scoped + [(right, "") for right in cluster]


class Problem(Exception):
    """A failed check whose fix depends on what went wrong."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def explain(exc: BaseException) -> str:
    """One line for a failure: the API server's own message, not its headers and body."""
    if isinstance(exc, kubernetes.client.ApiException):
        message = exc.reason or ""
        with contextlib.suppress(TypeError, ValueError, KeyError):  # a Status, or not
            message = json.loads(exc.body or "")["message"]
        return f"{exc.status} {message}".strip()
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def summary(failures: int) -> str:
    if not failures:
        return "all checks passed"
    return f"{failures} check{'' if failures == 1 else 's'} failed"


class Report:
    def __init__(self) -> None:
        self.failures = 0

    def check(self, name: str, action: Callable[[], str], fix: str) -> None:
        try:
            detail = action()
        except Exception as exc:
            self.failures += 1
            print(f"FAIL  {name}: {explain(exc)}\n      fix: {getattr(exc, 'fix', fix)}")
        else:
            print(f"ok    {name}: {detail}")


def crd_served(
    api: kubernetes.client.ApiClient,
    group: str = GROUP,
    version: str = VERSION,
    plural: str = PLURAL,
) -> str:
    """That the API server serves the ServiceRegistration resource. Asked through discovery,
    which every authenticated user may read: the answer does not depend on RBAC."""
    custom = kubernetes.client.CustomObjectsApi(api)
    try:
        found = custom.get_api_resources(group, version, _request_timeout=REQUEST_TIMEOUT)
    except kubernetes.client.ApiException as exc:
        if exc.status != 404:
            raise
        found = None
    if found is None or plural not in {r.name for r in found.resources}:
        raise Problem(f"the CRD {plural}.{group} ({version}) is not installed", CRD_FIX)
    return f"{plural}.{group}/{version}"


def _api_checks(report: Report, settings: Settings) -> None:
    try:
        api = load_config()
    except Exception as exc:
        report.failures += 1
        print(f"FAIL  kubeconfig: {explain(exc)}")
        print("      fix: run in a pod with a ServiceAccount, or set KUBECONFIG")
        return
    version = kubernetes.client.VersionApi(api)
    report.check(
        "API server",
        lambda: str(version.get_code(_request_timeout=REQUEST_TIMEOUT).git_version),
        "check the API server address and credentials in the kubeconfig",
    )
    report.check("CRD installed", lambda: crd_served(api), CRD_FIX)
    auth = kubernetes.client.AuthorizationV1Api(api)
    for right, ns in needed(settings.namespace, settings.readiness_gate):

        def ask(right: Right = right, ns: str = ns) -> str:
            attributes = kubernetes.client.V1ResourceAttributes(
                verb=right.verb,
                group=right.group,
                resource=right.resource,
                subresource=right.subresource,
                namespace=ns,
                name=right.name or None,
            )
            spec = kubernetes.client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
            review = auth.create_self_subject_access_review(
                kubernetes.client.V1SelfSubjectAccessReview(spec=spec),
                _request_timeout=REQUEST_TIMEOUT,
            )
            if review.status is None or not review.status.allowed:
                raise PermissionError(getattr(review.status, "reason", None) or "denied")
            return "allowed"

        report.check(right.label(ns), ask, "grant it in the operator's (Cluster)Role; see charts/")


async def _outcome(action: Callable[[], Awaitable[str]]) -> str | Exception:
    try:
        return await action()
    except (EtcdError, Problem) as exc:
        return exc


async def _etcd_checks(report: Report, settings: Settings) -> None:
    etcd = Etcd(settings.etcd())
    owner = owner_keys(settings.owner_id)
    endpoints = ", ".join(settings.etcd_endpoints)

    async def reachable() -> str:
        # What /readyz asks: a count-only read of the operator's own prefix, which needs only
        # the read access the operator has anyway.
        try:
            await etcd.ping(owner + "leases/")
        except EtcdUnavailable:
            raise
        except EtcdError as exc:  # it answered, and refused
            fix = f"check --etcd-username/--etcd-password-file; the user must read {owner}"
            raise Problem(str(exc), fix) from None
        try:
            return f"etcd {await etcd.version()}"
        except EtcdError as exc:
            # Status needs the root role on etcd 3.6 with auth enabled; the operator does not.
            return f"answers (server version not shown: {explain(exc)})"

    async def write() -> str:
        lease = await etcd.grant(5)
        await etcd.put(owner + "doctor", "ok", lease)
        await etcd.revoke(lease)
        return "granted a lease, wrote and removed a probe key"

    def may_write(prefix: str) -> Callable[[], Awaitable[str]]:
        async def probe() -> str:
            try:
                await etcd.may_write(prefix + "etcd-registrar-doctor-probe")
            except EtcdUnavailable:
                raise
            except EtcdError as exc:
                fix = (
                    f"grant the operator's etcd role readwrite on the prefix {prefix}: etcdctl "
                    f"role grant-permission ROLE --prefix=true readwrite {prefix}"
                )
                raise Problem(str(exc), fix) from None
            return "allowed (nothing written)"

        return probe

    prefixes = _registry_prefixes(settings)
    try:
        reached = await _outcome(reachable)
        # Unreachable: the write would only fail the same way, after another timeout.
        wrote = reached if isinstance(reached, Exception) else await _outcome(write)
        permitted = {
            p: reached if isinstance(reached, Exception) else await _outcome(may_write(p))
            for p in prefixes
        }
    finally:
        await etcd.close()

    def show(result: str | Exception) -> Callable[[], str]:
        def action() -> str:
            if isinstance(result, Exception):
                raise result
            return result

        return action

    report.check(
        f"etcd reachable at {endpoints}",
        show(reached),
        "check --etcd-endpoints, TLS files (--etcd-ca/--etcd-cert/--etcd-key) and network",
    )
    report.check(
        "etcd lease and write",
        show(wrote),
        f"give the etcd user readwrite on the prefix {owner} (see docs/secure-etcd.md)",
    )
    for prefix, result in permitted.items():
        report.check(f"etcd read/write under {prefix}", show(result), "see docs/secure-etcd.md")


def _registry_prefixes(settings: Settings) -> list[str]:
    """Where the keys go: the allowed prefixes, else the default layout's."""
    if settings.allowed_prefix:
        return [p.rstrip("/") + "/" for p in settings.allowed_prefix]
    prefix = Defaults(settings.default_ttl, settings.default_format, settings.default_prefix)
    return [prefix.layout.prefix + "/"] if prefix.layout.prefix else []


def run_checks(settings: Settings) -> int:
    report = Report()
    _api_checks(report, settings)
    asyncio.run(_etcd_checks(report, settings))
    print(summary(report.failures))
    return 0 if not report.failures else 1
