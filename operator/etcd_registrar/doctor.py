"""`etcd-registrar doctor`: check what the operator needs, and say how to fix what is missing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import kubernetes

from etcd_registrar import GROUP, PLURAL, VERSION, crd
from etcd_registrar.candidacy import Candidate, judge
from etcd_registrar.config import Settings
from etcd_registrar.election import leader_key
from etcd_registrar.etcd import Etcd, EtcdError, EtcdUnavailable
from etcd_registrar.formats import RESERVED_PREFIX
from etcd_registrar.kube import REQUEST_TIMEOUT, explain, login
from etcd_registrar.leases import owner_keys
from etcd_registrar.source import Defaults

CRD_NAME = f"{PLURAL}.{GROUP}"


def load_config(kubeconfig: Path | None) -> kubernetes.client.ApiClient:
    """The client of the API server `run` would log in to (kube.login: raises LoginError
    for credentials `run` cannot use), one attempt per call: urllib3's retries would log
    three warnings for each. Raises kubernetes.config.ConfigException when there are none."""
    login(kubeconfig)
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
    config = kubernetes.client.Configuration.get_default_copy()
    config.retries = False
    return kubernetes.client.ApiClient(config)


# How to fix each failed check, {placeholders} filled in; docs/troubleshooting.md quotes
# them, and tests/unit/test_docs.py checks that it quotes nothing else.
CRD_FIX = (
    "etcd-registrar crds | kubectl apply -f -   "
    f"(or kubectl apply -f crds/{CRD_NAME}.yaml, or the Helm chart with crds.enabled=true)"
)
KUBECONFIG_FIX = "run in a pod with a ServiceAccount, or pass --kubeconfig (or set KUBECONFIG)"
API_FIX = "check the API server address and credentials in the kubeconfig"
RIGHT_FIX = "grant it in the operator's (Cluster)Role; see charts/"
ETCD_FIX = "check --etcd-endpoints, TLS files (--etcd-ca/--etcd-cert/--etcd-key) and network"
ETCD_AUTH_FIX = "check --etcd-username/--etcd-password-file; the user must read {owner}"
WRITE_FIX = "give the etcd user readwrite on the prefix {owner} (see docs/secure-etcd.md)"
PREFIX_FIX = (
    "grant the operator's etcd role readwrite on the prefix {prefix}: "
    "etcdctl role grant-permission ROLE --prefix=true readwrite {prefix}"
)
PREFIX_OTHER_FIX = "see docs/secure-etcd.md"
MEMBER_FIX = "check that this member runs, and that its certificate names {host}"
SCOPE_FIX = "give each installation (each cluster sharing this etcd) its own --owner-id (ownerId)"
FIXES = [CRD_FIX, KUBECONFIG_FIX, API_FIX, RIGHT_FIX, ETCD_FIX, ETCD_AUTH_FIX, WRITE_FIX]
FIXES += [PREFIX_FIX, PREFIX_OTHER_FIX, MEMBER_FIX, SCOPE_FIX]
CRD_CURRENT = "CRD is this version's"
SKIPPED = "needs {needs}, which failed above"


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
    # Namespaces in every mode: the service ranges an administrator assigns (tenancy).
    return scoped + [(right, "") for right in [*CRDS, IDENTITY, *NAMESPACES]]


class Problem(Exception):
    """A failed check whose fix depends on what went wrong."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class Doubt(Exception):
    """Not a failure, but worth a look (no leader: no operator of this owner id runs)."""


def summary(failures: int, skipped: int = 0) -> str:
    if not failures:
        return "all checks passed"
    line = f"{failures} check{'' if failures == 1 else 's'} failed"
    return f"{line}, {skipped} skipped" if skipped else line


class Report:
    """Prints each check's outcome in one line, a failure's fix in a second one. A check
    that needs one which failed is skipped, naming it: one root cause, one FAIL."""

    def __init__(self) -> None:
        self.failures = 0
        self.skipped = 0

    def check(self, name: str, action: Callable[[], str], fix: str) -> bool:
        try:
            detail = action()
        except Doubt as doubt:
            print(f"warn  {name}: {doubt}")
            return True
        except Exception as exc:
            self.fail(name, explain(exc), getattr(exc, "fix", fix))
            return False
        print(f"ok    {name}: {detail}")
        return True

    def fail(self, name: str, reason: str, fix: str) -> None:
        self.failures += 1
        print(f"FAIL  {name}: {reason}\n      fix: {fix}")

    def skip(self, names: Sequence[str], needs: str) -> None:
        self.skipped += len(names)
        for name in names:
            print(f"skip  {name}: {SKIPPED.format(needs=needs)}")


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
    rights = needed(settings.namespace, settings.readiness_gate)
    later = ["CRD installed", *(right.label(ns) for right, ns in rights), CRD_CURRENT]
    try:
        api = load_config(settings.kubeconfig)
    except Exception as exc:
        report.fail("kubeconfig", explain(exc), KUBECONFIG_FIX)
        report.skip(["API server", *later], "the kubeconfig")
        return
    version = kubernetes.client.VersionApi(api)
    if not report.check(
        f"API server {api.configuration.host}",
        lambda: str(version.get_code(_request_timeout=REQUEST_TIMEOUT).git_version),
        API_FIX,
    ):
        report.skip(later, "the API server")
        return
    installed = report.check("CRD installed", lambda: crd_served(api), CRD_FIX)
    auth = kubernetes.client.AuthorizationV1Api(api)
    allowed: dict[Right, bool] = {}
    for right, ns in rights:

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

        allowed[right] = report.check(right.label(ns), ask, RIGHT_FIX) and allowed.get(right, True)
    if not installed:
        report.skip([CRD_CURRENT], "'CRD installed'")
    elif not allowed[CRDS[0]]:
        report.skip([CRD_CURRENT], f"'{CRDS[0].label('')}'")
    else:
        report.check(CRD_CURRENT, lambda: crd_current(api), CRD_FIX)


def crd_current(api: kubernetes.client.ApiClient) -> str:
    """That the installed CRD's schema for this version is the one this binary generates:
    an older CRD lets through what the operator refuses, a newer one the reverse."""
    extensions = kubernetes.client.ApiextensionsV1Api(api)
    response: Any = extensions.list_custom_resource_definition(
        field_selector=f"metadata.name={CRD_NAME}",
        _request_timeout=REQUEST_TIMEOUT,
        _preload_content=False,  # the raw schema: the client's models drop what they lack
    )
    [installed] = json.loads(response.data)["items"]
    [ours] = crd.crd()["spec"]["versions"]
    theirs = {v["name"]: v for v in installed["spec"]["versions"]}.get(VERSION, {})
    if theirs.get("schema") != ours["schema"]:
        raise Problem(
            f"the installed {CRD_NAME} {VERSION} schema is not this version's "
            "(etcd-registrar crds | kubectl diff -f - shows the difference)",
            CRD_FIX,
        )
    return f"the schema of {VERSION} is this version's"


async def _outcome(action: Callable[[], Awaitable[str]]) -> str | Exception:
    try:
        return await action()
    except (EtcdError, Problem, Doubt) as exc:
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
            raise Problem(str(exc), ETCD_AUTH_FIX.format(owner=owner)) from None
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
                raise Problem(str(exc), PREFIX_FIX.format(prefix=prefix)) from None
            return "allowed (nothing written)"

        return probe

    async def leader() -> str:
        key = leader_key(settings.owner_id)
        found = (await etcd.get_many([key])).get(key)
        if found is None:
            raise Doubt(
                f"none: no operator of owner id {settings.owner_id} runs, or none is elected yet"
            )
        leader = Candidate.parse(found.value)
        verdict = judge(settings.candidate("doctor"), leader)
        if verdict.refused or leader is None:
            raise Problem(verdict.reason, SCOPE_FIX)
        return f"{leader.id}, watching {leader.describe_scope()}"

    async def owners() -> str:
        try:
            records, _ = await etcd.get_prefix(f"{RESERVED_PREFIX}/", keys_only=True)
        except EtcdUnavailable:
            raise
        except EtcdError as exc:  # a least-privilege user may read only its own
            return f"not listed ({explain(exc)})"
        ids = sorted({r.key.split("/")[2] for r in records if r.key.count("/") >= 3})
        others = ", ".join(i for i in ids if i != settings.owner_id) or "none"
        mine = "" if settings.owner_id in ids else " (nothing recorded yet)"
        return f"{settings.owner_id}{mine}; other owner ids: {others}"

    prefixes = _registry_prefixes(settings)
    urls = settings.etcd_endpoints if len(settings.etcd_endpoints) > 1 else []
    try:
        reached = await _outcome(reachable)
        # Unreachable or refused: the rest would only fail the same way, after more timeouts.
        wrote = permitted = leading = owner_ids = None
        members: dict[str, str | Exception] = {}
        if not isinstance(reached, Exception):
            # The operator moves past a member that fails: say which, while the others serve.
            members = {url: await _outcome(_member_answers(settings, url, owner)) for url in urls}
            wrote = await _outcome(write)
            permitted = {p: await _outcome(may_write(p)) for p in prefixes}
            leading, owner_ids = await _outcome(leader), await _outcome(owners)
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
        ETCD_FIX,
    )
    under = [f"etcd read/write under {p}" for p in prefixes]
    member_checks = [f"etcd member {url}" for url in urls]
    later = ["etcd lease and write", *member_checks, *under, "leader", "owner ids in etcd"]
    if wrote is None or permitted is None or leading is None or owner_ids is None:
        report.skip(later, "etcd")
        return
    report.check(later[0], show(wrote), WRITE_FIX.format(owner=owner))
    for check, (url, result) in zip(member_checks, members.items(), strict=True):
        report.check(check, show(result), MEMBER_FIX.format(host=_host(url)))
    for check, result in zip(under, permitted.values(), strict=True):
        report.check(check, show(result), PREFIX_OTHER_FIX)
    report.check("leader", show(leading), ETCD_AUTH_FIX.format(owner=owner))
    report.check("owner ids in etcd", show(owner_ids), ETCD_AUTH_FIX.format(owner=owner))


def _member_answers(settings: Settings, url: str, owner: str) -> Callable[[], Awaitable[str]]:
    """That the member at `url` alone answers a read, over its own connection."""

    async def ping() -> str:
        member = Etcd(dataclasses.replace(settings.etcd(), endpoints=(url,)))
        try:
            await member.ping(owner + "leases/")
        except EtcdUnavailable:
            raise
        except EtcdError as exc:  # it answered, and refused: the check above says why
            return f"answers ({explain(exc)})"
        finally:
            await member.close()
        return "answers"

    return ping


def _host(url: str) -> str:
    return urlsplit(url if "://" in url else f"http://{url}").hostname or url


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
    print(summary(report.failures, report.skipped))
    return 0 if not report.failures else 1
