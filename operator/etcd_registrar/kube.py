"""The few Kubernetes API calls the controller makes itself (pods are watched by podwatch).

The official client is synchronous, so each call runs in a worker thread; these calls are
rare (a pod UID list per sweep, debounced status patches, rate-limited Events).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes

from etcd_registrar import GROUP, PLURAL, VERSION
from etcd_registrar.supervisor import Backoff

logger = logging.getLogger(__name__)

COMPONENT = "etcd-registrar"  # the Events' source
MESSAGE_LIMIT = 1024  # the API server refuses longer Event messages
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

# (connect, read) seconds for every call made here and by `doctor`. Without it a hung API
# server blocks the sweep for ever, and exit too (asyncio.run waits for the worker thread).
# The read timeout bounds each wait for data, not a whole response: 15 s is far above a
# healthy server's time to answer one 5000-pod metadata page. urllib3 retries an idempotent
# GET up to 3 times (on new connections, each bounded by the connect timeout once the server
# is hung), so a pod list gives up within about half a minute, well inside the liveness
# deadline (3 x resync + 60 s). A constant, not a setting: the bound matters, not its value.
REQUEST_TIMEOUT = (5.0, 15.0)


def now() -> str:
    """The time now, as Kubernetes writes timestamps (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_config(
    kubeconfig: Path | None = None, retries: bool = True
) -> kubernetes.client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (`kubeconfig`, else
    $KUBECONFIG, else ~/.kube/config), in the order kopf's own login tries them. Raises
    kubernetes.config.ConfigException when there are none. `retries=False`: one attempt per
    call (urllib3 retries a failed GET 3 times, logging a warning each time)."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
    config = kubernetes.client.Configuration.get_default_copy()
    if not retries:
        config.retries = False
    return kubernetes.client.ApiClient(config)


def explain(exc: BaseException) -> str:
    """One line for a failed call: the API server's own message (not its headers and body),
    or the network's reason ("Connection refused"), not urllib3's wrapping."""
    if isinstance(exc, kubernetes.client.ApiException):
        message = exc.reason or ""
        with contextlib.suppress(TypeError, ValueError, KeyError):  # a Status, or not
            message = json.loads(exc.body or "")["message"]
        return f"{exc.status} {message}".strip()
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def wait_for_api_server(
    api: kubernetes.client.ApiClient, sleep: Callable[[float], None] = time.sleep
) -> str:
    """The API server's version, once it answers: until then one warning line per attempt,
    with jittered backoff (kopf would retry its startup every 60 s with a traceback)."""
    version = kubernetes.client.VersionApi(api)
    backoff = Backoff(base=1.0, cap=30.0)
    while True:
        try:
            return str(version.get_code(_request_timeout=REQUEST_TIMEOUT).git_version)
        except Exception as exc:  # the network's or the server's: either way, try again
            delay = backoff.delay()
            logger.warning(
                "API server %s not reachable (%s); retrying in %.1f s",
                api.configuration.host,
                explain(exc),
                delay,
            )
            sleep(delay)


class Kube:
    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        namespaces: Sequence[str] = (),
        pod_selector: str | None = None,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self.api = api
        self.namespaces = tuple(namespaces)
        self.pod_selector = pod_selector
        self.timeout = timeout

    @property
    def scopes(self) -> list[str | None]:
        """The namespaces pods are followed in; [None]: all of them."""
        return list(self.namespaces) or [None]

    def pods_raw(self, namespace: str | None, **options: Any) -> Any:
        """A pod list or watch in `namespace` (None: all) through the pod selector, as the
        raw, undecoded response: the caller decodes one page or line at a time."""
        core = kubernetes.client.CoreV1Api(self.api)
        options |= {"label_selector": self.pod_selector, "_preload_content": False}
        if namespace:
            return core.list_namespaced_pod(namespace, **options)
        return core.list_pod_for_all_namespaces(**options)

    async def list_pod_uids(self) -> set[str]:
        """UIDs of every pod in scope, listed as metadata only (a fraction of full pods)."""
        uids: set[str] = set()
        for namespace in self.scopes:
            uids |= await asyncio.to_thread(self._list_uids, namespace)
        return uids

    def _list_uids(self, namespace: str | None) -> set[str]:
        uids: set[str] = set()
        token: str | None = None
        while True:
            response = self.pods_raw(
                namespace,
                limit=500,  # pages of managedFields-heavy metadata: keep the peak small
                _continue=token,
                _headers={"Accept": _METADATA_LIST},
                _request_timeout=self.timeout,
            )
            page = json.loads(response.data)
            uids.update(item["metadata"]["uid"] for item in page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            del page, response  # not alive while the next page is read and decoded
            if not token:
                return uids

    async def cluster_identity(self) -> str:
        """This cluster's identity: the UID of its kube-system namespace, which lives as long
        as the cluster (the identity SIG Multicluster's ClusterProperty suggests). "" when
        the operator may not read it, said loudly: it then cannot tell its cluster apart."""
        core = kubernetes.client.CoreV1Api(self.api)
        try:
            namespace = await asyncio.to_thread(
                core.read_namespace, "kube-system", _request_timeout=self.timeout
            )
        except kubernetes.client.ApiException as exc:
            if exc.status not in (403, 404):
                raise
            logger.error(
                "cannot read the kube-system namespace (%s %s), so this operator cannot tell "
                "its cluster from another one sharing its etcd and owner id: grant it get on "
                "namespaces/kube-system (the chart does)",
                *(exc.status, exc.reason),
            )
            return ""
        meta = namespace.metadata
        return str(meta.uid) if meta is not None and meta.uid else ""

    async def list_registrations(self) -> list[dict[str, Any]]:
        """Every ServiceRegistration in scope (a few hundred at most: one list call each)."""
        custom = kubernetes.client.CustomObjectsApi(self.api)
        bodies: list[dict[str, Any]] = []
        for namespace in self.scopes:
            listed: Any  # the client types a custom object list as `object`
            if namespace:
                listed = await asyncio.to_thread(
                    custom.list_namespaced_custom_object,
                    *(GROUP, VERSION, namespace, PLURAL),
                    _request_timeout=self.timeout,
                )
            else:
                listed = await asyncio.to_thread(
                    custom.list_cluster_custom_object,
                    *(GROUP, VERSION, PLURAL),
                    _request_timeout=self.timeout,
                )
            bodies += listed.get("items") or []
        return bodies

    async def patch_registration_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        custom = kubernetes.client.CustomObjectsApi(self.api)
        await asyncio.to_thread(
            custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _request_timeout=self.timeout,
        )

    async def patch_pod_condition(
        self,
        namespace: str,
        name: str,
        uid: str,
        condition: dict[str, Any],
        threads: Executor | None = None,
    ) -> None:
        """Set one condition of a pod through pods/status, leaving the others alone (a
        strategic merge keyed on the type); the UID is a precondition, so a new pod of the
        same name is never patched (409). Runs on `threads` (None: the default pool)."""
        core = kubernetes.client.CoreV1Api(self.api)
        body: Any = {"metadata": {"uid": uid}, "status": {"conditions": [condition]}}
        patch = functools.partial(
            core.patch_namespaced_pod_status,
            name,
            namespace,
            body,
            _content_type="application/strategic-merge-patch+json",
            _request_timeout=self.timeout,
        )
        await asyncio.get_running_loop().run_in_executor(threads, patch)

    async def post_event(
        self, involved: Mapping[str, Any], type: str, reason: str, message: str
    ) -> None:
        """Post a core/v1 Event about `involved` (apiVersion, kind and metadata)."""
        meta = involved["metadata"]
        stamp = now()
        event: Any = {  # a dict body: the client sends it as it is
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type,
            "reason": reason,
            "message": message[:MESSAGE_LIMIT],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        core = kubernetes.client.CoreV1Api(self.api)
        await asyncio.to_thread(
            core.create_namespaced_event,
            meta["namespace"],
            event,
            _request_timeout=self.timeout,
        )
