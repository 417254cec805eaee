"""`etcd-registrar doctor`: check what the operator needs, and say how to fix what is missing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import kubernetes

from etcd_registrar import GROUP, PLURAL
from etcd_registrar.config import Settings
from etcd_registrar.etcd import Etcd, EtcdError
from etcd_registrar.kube import load_config

# (verb, group, resource, subresource): exactly what the Helm chart's RBAC grants.
NEEDED = [
    ("list", "", "pods", ""),
    ("watch", "", "pods", ""),
    ("create", "", "events", ""),
    ("list", GROUP, PLURAL, ""),
    ("watch", GROUP, PLURAL, ""),
    ("patch", GROUP, PLURAL, "status"),
]


class Report:
    def __init__(self) -> None:
        self.failures = 0

    def check(self, name: str, action: Callable[[], str], fix: str) -> None:
        try:
            detail = action()
        except Exception as exc:
            self.failures += 1
            print(f"FAIL  {name}: {exc}\n      fix: {fix}")
        else:
            print(f"ok    {name}: {detail}")


def _api_checks(report: Report, settings: Settings) -> None:
    try:
        api = load_config()
    except Exception as exc:
        report.failures += 1
        print(f"FAIL  kubeconfig: {exc}")
        print("      fix: run in a pod with a ServiceAccount, or set KUBECONFIG")
        return
    version = kubernetes.client.VersionApi(api)
    report.check(
        "API server",
        lambda: str(version.get_code().git_version),
        "check the API server address and credentials in the kubeconfig",
    )
    ext = kubernetes.client.ApiextensionsV1Api(api)
    report.check(
        "CRD installed",
        lambda: str(ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}").spec.group),
        "kubectl apply -f crds/ (or install the Helm chart with crds.enabled=true)",
    )
    auth = kubernetes.client.AuthorizationV1Api(api)
    namespaces = settings.namespace or [""]
    for ns in namespaces:
        for verb, group, resource, sub in NEEDED:
            label = f"can {verb} {resource}{'/' + sub if sub else ''} in {ns or 'all namespaces'}"

            def ask(
                verb: str = verb,
                group: str = group,
                resource: str = resource,
                sub: str = sub,
                ns: str = ns,
            ) -> str:
                attributes = kubernetes.client.V1ResourceAttributes(
                    verb=verb, group=group, resource=resource, subresource=sub, namespace=ns
                )
                spec = kubernetes.client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=attributes
                )
                review = auth.create_self_subject_access_review(
                    kubernetes.client.V1SelfSubjectAccessReview(spec=spec)
                )
                if review.status is None or not review.status.allowed:
                    raise PermissionError(getattr(review.status, "reason", None) or "denied")
                return "allowed"

            report.check(label, ask, "grant it in the operator's (Cluster)Role; see charts/")


async def _etcd_checks(report: Report, settings: Settings) -> None:
    etcd = Etcd(settings.etcd())
    probe = f"/etcd-registrar/{settings.owner_id}/doctor"
    endpoints = ", ".join(settings.etcd_endpoints)
    results: dict[str, str | Exception] = {}
    try:
        results["version"] = await etcd.version()
        lease = await etcd.grant(5)
        await etcd.put(probe, "ok", lease)
        await etcd.revoke(lease)
        results["write"] = "granted a lease, wrote and removed a probe key"
    except EtcdError as exc:
        results.setdefault("version", exc)
        results["write"] = exc
    finally:
        await etcd.close()

    def show(key: str) -> Callable[[], str]:
        def action() -> str:
            value = results[key]
            if isinstance(value, Exception):
                raise value
            return value

        return action

    report.check(
        f"etcd reachable at {endpoints}",
        show("version"),
        "check --etcd-endpoints, TLS files (--etcd-ca/--etcd-cert/--etcd-key) and network",
    )
    report.check(
        "etcd lease and write",
        show("write"),
        "give the etcd user read/write on the registry prefixes and /etcd-registrar/",
    )


def run_checks(settings: Settings) -> int:
    report = Report()
    _api_checks(report, settings)
    asyncio.run(_etcd_checks(report, settings))
    print("all checks passed" if not report.failures else f"{report.failures} checks failed")
    return 0 if not report.failures else 1
