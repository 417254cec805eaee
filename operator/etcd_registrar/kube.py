"""The Kubernetes API calls the operator makes itself (pods are watched by podwatch).

They go through aiohttp, the HTTP client kopf already runs on, with the credentials kopf
uses (see `login`): one HTTP stack and one credentials path in the process. The official
`kubernetes` client in worker threads cost 9.5 MiB of RSS on import alone (80.6 -> 71.1 MiB
with kopf, grpc and aiohttp loaded), and a thread per call; only `doctor` still uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml

from etcd_registrar import GROUP, PLURAL, VERSION, __version__
from etcd_registrar.supervisor import Backoff

if TYPE_CHECKING:
    from kopf import ConnectionInfo

logger = logging.getLogger(__name__)

COMPONENT = "etcd-registrar"  # the Events' source
MESSAGE_LIMIT = 1024  # the API server refuses longer Event messages
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# (connect, read) seconds for every call made here and by `doctor`. Without it a hung API
# server blocks the sweep for ever. The read timeout bounds each wait for data, not a whole
# response: 15 s is far above a healthy server's time to answer one 500-pod metadata page.
# A failed call is not retried here: the sweep, the status and the gate retry on their own.
# A constant, not a setting: the bound matters, not its value.
REQUEST_TIMEOUT = (5.0, 15.0)


class LoginError(Exception):
    """No usable credentials: the message says which and what to do."""


class KubeError(Exception):
    """The API server refused a request: its HTTP status and its own message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}".strip())
        self.status, self.message = status, message


def now() -> str:
    """The time now, as Kubernetes writes timestamps (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def login(kubeconfig: Path | None = None) -> ConnectionInfo:
    """In-cluster credentials when running in a pod (the service account's token, read anew
    at each login: it rotates), else the kubeconfig (`kubeconfig`, else $KUBECONFIG, else
    ~/.kube/config) with a token or a client certificate. kopf logs in with it too."""
    import kopf  # loaded by `run` anyway; `plan` needs only its credentials type

    settings = kopf.OperatorSettings()
    if (_SERVICE_ACCOUNT / "token").exists():
        info = kopf.login_with_service_account(settings=settings)
        if info is not None:
            # As client-go's in-cluster config: the Service's address from the environment
            # kubelet sets, not kopf's https://kubernetes.default.svc, which needs cluster DNS.
            host, port = (os.environ.get(f"KUBERNETES_SERVICE_{k}") for k in ("HOST", "PORT"))
            if host and port:
                address = f"[{host}]" if ":" in host else host
                info = dataclasses.replace(info, server=f"https://{address}:{port}")
            return info
    path = kubeconfig or Path(os.environ.get("KUBECONFIG") or "~/.kube/config").expanduser()
    try:
        config = yaml.safe_load(path.read_text()) or {}
        context = _named(config, "contexts", config.get("current-context"))
        cluster = _named(config, "clusters", context.get("cluster"))
        user = _named(config, "users", context.get("user"))
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise LoginError(f"no service account and no usable kubeconfig {path}: {exc}") from exc
    if "exec" in user or "auth-provider" in user:
        raise LoginError(
            f"kubeconfig {path}: the user {context.get('user')!r} authenticates with an exec "
            "plugin or auth provider, which `run` does not support: use a token or a client "
            "certificate (e.g. a service account's kubeconfig)"
        )

    def file(entry: dict[str, Any], key: str) -> str | None:  # relative to the kubeconfig
        return str(path.parent / entry[key]) if entry.get(key) else None

    return kopf.ConnectionInfo(
        server=str(cluster["server"]),
        ca_path=file(cluster, "certificate-authority"),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=file(user, "client-certificate"),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=file(user, "client-key"),
        private_key_data=user.get("client-key-data"),
        username=user.get("username"),
        password=user.get("password"),
        token=user.get("token"),
        default_namespace=context.get("namespace"),
    )


def _named(config: Mapping[str, Any], section: str, name: Any) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if entry.get("name") == name:
            return dict(entry.get(section.removesuffix("s")) or {})
    raise KeyError(f"no {section.removesuffix('s')} named {name!r}")


def explain(exc: BaseException) -> str:
    """One line for a failed call: the API server's own message (not its headers and body),
    or the network's reason ("Connection refused"), not the HTTP client's wrapping."""
    if isinstance(exc, KubeError):
        return str(exc)
    status, body = getattr(exc, "status", None), getattr(exc, "body", None)
    if isinstance(status, int):  # the `kubernetes` client's ApiException (doctor)
        message = getattr(exc, "reason", None) or ""
        with contextlib.suppress(TypeError, ValueError, KeyError):  # a Status, or not
            message = json.loads(body or "")["message"]
        return f"{status} {message}".strip()
    for cause in (exc, exc.__cause__, getattr(exc, "os_error", None)):
        if isinstance(cause, OSError) and (cause.errno or cause.strerror):
            # asyncio words a refused connection "Connect call failed (host, port)"
            return os.strerror(cause.errno) if cause.errno else str(cause.strerror)
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace").strip()[:200]


class Kube:
    """The API server `login` names, seen through `namespaces` (none: all) and a pod
    selector. One aiohttp session per event loop, opened at the first call."""

    def __init__(
        self,
        login: Callable[[], ConnectionInfo],
        namespaces: Sequence[str] = (),
        pod_selector: str | None = None,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> None:
        self.login = login
        self.namespaces = tuple(namespaces)
        self.pod_selector = pod_selector
        self.timeout = timeout
        self._server = ""
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def scopes(self) -> list[str | None]:
        """The namespaces pods are followed in; [None]: all of them."""
        return list(self.namespaces) or [None]

    def _open(self) -> aiohttp.ClientSession:
        session, loop = self._session, asyncio.get_running_loop()
        if session is None or session.closed or self._loop is not loop:
            info = self.login()
            self._loop = loop
            self._server = info.server.rstrip("/")
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                headers={**info.as_http_headers(), "User-Agent": f"{COMPONENT}/{__version__}"},
                trust_env=info.trust_env,
            )
        return session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, path: str, read: float | None = None, **options: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A successful response to `method path`; raises KubeError for a refusal. A 401
        logs in again (a rotated token) and tries once more. `read`: the read timeout."""
        connect, default_read = self.timeout
        timeout = aiohttp.ClientTimeout(sock_connect=connect, sock_read=read or default_read)
        for attempt in (1, 2):
            session = self._open()
            async with session.request(
                method, self._server + path, timeout=timeout, **options
            ) as response:
                if response.status == 401 and attempt == 1:
                    await self.close()
                    continue
                if response.status >= 400:
                    raise KubeError(response.status, _message(await response.read()))
                yield response
                return

    async def call(self, method: str, path: str, **options: Any) -> Any:
        """The decoded JSON answer to `method path`."""
        async with self.request(method, path, **options) as response:
            return json.loads(await response.read())

    def _pods_path(self, namespace: str | None) -> str:
        return f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"

    def _selected(self, **params: Any) -> dict[str, str]:
        """Query parameters through the pod selector, as the API server spells them."""
        params["labelSelector"] = self.pod_selector
        return {
            k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in params.items()
            if v is not None
        }

    async def pod_page(
        self, namespace: str | None, limit: int, token: str | None, metadata_only: bool = False
    ) -> dict[str, Any]:
        """One page of the pods in `namespace` (None: all) through the pod selector."""
        headers = {"Accept": _METADATA_LIST} if metadata_only else {}
        page: dict[str, Any] = await self.call(
            "GET",
            self._pods_path(namespace),
            params=self._selected(limit=limit, **{"continue": token}),
            headers=headers,
        )
        return page

    async def watch_pods(
        self, namespace: str | None, version: str, seconds: int, idle: float
    ) -> AsyncIterator[dict[str, Any]]:
        """Each watch event after `version`, decoded, until the server ends the watch after
        `seconds`; no byte for `idle` seconds (bookmarks come every minute) fails it."""
        params = self._selected(
            watch=True,
            resourceVersion=version,
            allowWatchBookmarks=True,
            timeoutSeconds=seconds,
        )
        async with self.request("GET", self._pods_path(namespace), idle, params=params) as response:
            pending = bytearray()
            async for chunk in response.content.iter_any():  # no line-length limit
                pending += chunk
                *lines, rest = pending.split(b"\n")
                pending = bytearray(rest)
                for line in lines:
                    if line.strip():
                        yield json.loads(line)

    async def list_pod_uids(self) -> set[str]:
        """UIDs of every pod in scope, listed as metadata only (a fraction of full pods)."""
        uids: set[str] = set()
        for namespace in self.scopes:
            token: str | None = None
            while True:
                # pages of managedFields-heavy metadata: keep the peak small
                page = await self.pod_page(namespace, 500, token, metadata_only=True)
                uids.update(item["metadata"]["uid"] for item in page.get("items") or [])
                token = (page.get("metadata") or {}).get("continue")
                del page  # not alive while the next page is read and decoded
                if not token:
                    break
        return uids

    async def cluster_identity(self) -> str:
        """This cluster's identity: the UID of its kube-system namespace, which lives as long
        as the cluster (the identity SIG Multicluster's ClusterProperty suggests). "" when
        the operator may not read it, said loudly: it then cannot tell its cluster apart."""
        try:
            namespace = await self.call("GET", "/api/v1/namespaces/kube-system")
        except KubeError as exc:
            if exc.status not in (403, 404):
                raise
            logger.error(
                "cannot read the kube-system namespace (%s), so this operator cannot tell "
                "its cluster from another one sharing its etcd and owner id: grant it get on "
                "namespaces/kube-system (the chart does)",
                exc,
            )
            return ""
        return str((namespace.get("metadata") or {}).get("uid") or "")

    async def list_registrations(self) -> list[dict[str, Any]]:
        """Every ServiceRegistration in scope (a few hundred at most: one list call each)."""
        bodies: list[dict[str, Any]] = []
        for namespace in self.scopes:
            scope = f"/namespaces/{namespace}" if namespace else ""
            listed = await self.call("GET", f"/apis/{GROUP}/{VERSION}{scope}/{PLURAL}")
            bodies += listed.get("items") or []
        return bodies

    async def patch_registration_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        await self._patch(path, {"status": status}, "application/merge-patch+json")

    async def patch_pod_condition(
        self, namespace: str, name: str, uid: str, condition: dict[str, Any]
    ) -> None:
        """Set one condition of a pod through pods/status, leaving the others alone (a
        strategic merge keyed on the type); the UID is a precondition, so a new pod of the
        same name is never patched (409)."""
        body = {"metadata": {"uid": uid}, "status": {"conditions": [condition]}}
        path = f"/api/v1/namespaces/{namespace}/pods/{name}/status"
        await self._patch(path, body, "application/strategic-merge-patch+json")

    async def _patch(self, path: str, body: Any, content_type: str) -> None:
        async with self.request(
            "PATCH", path, data=json.dumps(body), headers={"Content-Type": content_type}
        ):
            pass

    async def post_event(
        self, involved: Mapping[str, Any], type: str, reason: str, message: str
    ) -> None:
        """Post a core/v1 Event about `involved` (apiVersion, kind and metadata)."""
        meta = involved["metadata"]
        stamp = now()
        event = {
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
        async with self.request(
            "POST", f"/api/v1/namespaces/{meta['namespace']}/events", json=event
        ):
            pass

    async def wait_for_api_server(self) -> str:
        """The API server's version, once it answers: until then one warning line per
        attempt, with jittered backoff (kopf would retry its startup every 60 s with a
        traceback)."""
        backoff = Backoff(base=1.0, cap=30.0)
        while True:
            try:
                return str((await self.call("GET", "/version"))["gitVersion"])
            except Exception as exc:  # the network's or the server's: either way, try again
                delay = backoff.delay()
                logger.warning(
                    "API server %s not reachable (%s); retrying in %.1f s",
                    self._server,
                    explain(exc),
                    delay,
                )
                await asyncio.sleep(delay)
