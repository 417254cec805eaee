"""kopf glue: thin handlers that hand each event to the application.

ServiceRegistrations are watched by kopf with `on.event`. Pods are watched by podwatch
(a paginated list and watch that keeps no pod bodies: kopf kept ~300 MiB of them at
10,000 pods), started with the rest of the pipeline; it persists nothing on the pods
either. The application lives in `memo`, started on startup, stopped on cleanup. kopf logs in as
the operator's own calls do (kube.login).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import kopf

from etcd_registrar import GROUP, PLURAL, VERSION
from etcd_registrar.app import App
from etcd_registrar.config import Settings
from etcd_registrar.kube import Kube, login


@kopf.on.login()
def kubernetes_login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    config: Settings = memo.config
    return login(config.kubeconfig)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: Settings = memo.config
    settings.watching.inactivity_timeout = 70  # reconnect silent watch streams
    credentials = partial(login, config.kubeconfig)
    identify = Kube(credentials)
    try:
        cluster = await identify.cluster_identity()
    finally:
        await identify.close()
    memo.app = App.create(config, credentials, cluster=cluster)
    await memo.app.start()  # stops what it started if it fails: kopf's retry starts clean


@kopf.on.cleanup(errors=kopf.ErrorsMode.IGNORED)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "app" in memo:
        await memo.app.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def registration_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Re-render the keys of every pod this registration governs; status follows."""
    memo.app.controller.on_registration(type, body)


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """An administrator's assignment of service ranges (annotation) may have changed."""
    if type != "DELETED":
        memo.app.controller.on_namespace(body)
