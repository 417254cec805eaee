"""A small asyncio client for the few Kubernetes API calls the benchmark makes in bulk.

The official client is synchronous and slow to (de)serialise; creating and patching
thousands of pods from one process on two cores needs an async HTTP client with bounded
concurrency. Every call records when it was sent and when its response arrived on
`time.monotonic()` (CLOCK_MONOTONIC, the clock bench/probe stamps etcd events with): the
response time is the moment the API server had accepted the change.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


DELETE_PAGE = 1000  # pods one DELETE removes (the API server's list limit)
DELETE_ATTEMPTS = 6  # failed pages in a row before giving up (about a minute of backoff)


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.status = status
        super().__init__(f"{method} {path} -> {status}: {body[:300]}")


@dataclass(frozen=True, slots=True)
class Timed:
    """A response and its timing: `sent` and `done` on time.monotonic()."""

    status: int
    body: JSON
    sent: float
    done: float


def _credentials(kubeconfig: Path, workdir: Path) -> tuple[str, ssl.SSLContext, dict[str, str]]:
    """Server URL, TLS context and auth headers of the kubeconfig's current context."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(
        c["context"] for c in config["contexts"] if c["name"] == config["current-context"]
    )
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])

    def material(entry: dict[str, Any], key: str, name: str) -> str | None:
        if f"{key}-data" in entry:
            path = workdir / name
            path.write_bytes(base64.b64decode(entry[f"{key}-data"]))
            return str(path)
        value = entry.get(key)
        return str(value) if value else None

    tls = ssl.create_default_context(cafile=material(cluster, "certificate-authority", "ca"))
    if cluster.get("insecure-skip-tls-verify"):
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    cert = material(user, "client-certificate", "cert")
    if cert:
        tls.load_cert_chain(cert, material(user, "client-key", "key"))
    headers = {"Authorization": f"Bearer {user['token']}"} if user.get("token") else {}
    return str(cluster["server"]).rstrip("/"), tls, headers


class KubeApi:
    """`async with KubeApi(kubeconfig) as api:` — at most `concurrency` requests in flight."""

    def __init__(self, kubeconfig: Path, concurrency: int = 32) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="bench-kube-")
        self.server, self._tls, self._headers = _credentials(kubeconfig, Path(self._workdir.name))
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeApi:
        connector = aiohttp.TCPConnector(ssl=self._tls, limit=self._concurrency)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=120),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        self._workdir.cleanup()

    async def call(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        *,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> Timed:
        """One request; raises ApiError unless the status is in `ok`."""
        assert self._session is not None, "use `async with KubeApi(...)`"
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        sent = time.monotonic()
        async with self._session.request(
            method, self.server + path, data=data, headers=headers
        ) as response:
            text = await response.text()
            done = time.monotonic()
        if response.status not in ok:
            raise ApiError(method, path, response.status, text)
        parsed = json.loads(text) if text.startswith("{") else {}
        return Timed(response.status, parsed, sent, done)

    # ----- pods

    async def create_pod(self, namespace: str, pod: JSON) -> Timed:
        return await self.call("POST", f"/api/v1/namespaces/{namespace}/pods", pod)

    async def patch_pod_status(self, namespace: str, name: str, status: JSON) -> Timed:
        """Merge-patch the status subresource (a list such as conditions is replaced whole)."""
        path = f"/api/v1/namespaces/{namespace}/pods/{name}/status"
        return await self.call("PATCH", path, {"status": status}, content_type=MERGE_PATCH)

    async def delete_pod(self, namespace: str, name: str, grace: int) -> Timed:
        """grace > 0: graceful (deletionTimestamp set, the pod stays until a kubelet — here
        nobody — confirms); grace 0: removed at once. A missing pod is not an error."""
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": grace}
        return await self.call("DELETE", path, options, ok=(200, 202, 404))

    async def delete_all_pods(
        self, namespace: str, page: int = DELETE_PAGE, attempts: int = DELETE_ATTEMPTS
    ) -> None:
        """Remove every pod of `namespace`, `page` at a time: one DELETE of all 10,000 pods
        ran past the API server's timeout (504). A failed page is retried with backoff;
        ApiError once `attempts` pages in a row failed."""
        path = f"/api/v1/namespaces/{namespace}/pods"
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
        failures, delay = 0, 1.0
        while True:
            try:
                left = await self.call("GET", f"{path}?limit=1")
                if not left.body.get("items"):
                    return
                await self.call("DELETE", f"{path}?limit={page}", options)
                failures, delay = 0, 1.0
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                failures += 1
                if failures >= attempts:
                    raise ApiError(
                        "DELETE", path, 0, f"gave up after {attempts} tries: {exc}"
                    ) from exc
                print(f"   deleting pods of {namespace} failed ({exc}); retrying in {delay:.0f}s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def list_pods(self, namespace: str) -> list[JSON]:
        items: list[JSON] = (await self.call("GET", f"/api/v1/namespaces/{namespace}/pods")).body[
            "items"
        ]
        return items
