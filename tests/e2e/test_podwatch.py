"""The pod watcher against the real API server: pages, watch events, scope and selector."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from etcd_registrar import podwatch
from etcd_registrar.app import App
from etcd_registrar.config import Settings
from etcd_registrar.kube import Kube
from etcd_registrar.podwatch import PodWatcher
from tests.aio import eventually
from tests.harness import Cluster

pytestmark = pytest.mark.e2e


def bare_pod(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {"app": "watched"})},
        "spec": {"containers": [{"name": "app", "image": "pause"}]},
    }


class Seen:
    """What the watcher handed over: (type, pod name) in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str | None, str]] = []

    def __call__(self, kind: str | None, pod: Mapping[str, Any]) -> None:
        self.events.append((kind, pod["metadata"]["name"]))

    def names(self, kind: str | None) -> set[str]:
        return {name for k, name in self.events if k == kind}


async def test_list_hands_over_every_page_and_the_watch_every_change_after_it(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(podwatch, "LIST_PAGE", 2)  # 5 pods: three pages
    for i in range(5):
        cluster.apply(bare_pod(f"listed-{i}"), namespace)
    watcher = PodWatcher(Kube(cluster.credentials(), [namespace]))
    seen = Seen()
    version = await watcher.list(namespace, seen)
    assert seen.events == [(None, f"listed-{i}") for i in range(5)]

    watching = asyncio.create_task(watcher.watch(namespace, version, seen))
    try:
        cluster.apply(bare_pod("late"), namespace)
        cluster.kubectl("label", "pod", "listed-0", "extra=1", "-n", namespace)
        cluster.kubectl("delete", "pod", "listed-1", "-n", namespace, "--grace-period=0", "--force")
        await eventually(lambda: "listed-1" in seen.names("DELETED"), 20, "the deletion")
        assert "late" in seen.names("ADDED")
        assert "listed-0" in seen.names("MODIFIED")
        assert not seen.names(None) - {f"listed-{i}" for i in range(5)}  # no relist
    finally:
        watching.cancel()


async def test_run_follows_only_the_selected_pods_of_its_namespaces(
    cluster: Cluster, namespace: str
) -> None:
    other = cluster.create_namespace("podwatch-other")
    try:
        cluster.apply(bare_pod("before", {"app": "watched"}), namespace)
        cluster.apply(bare_pod("unselected", {"app": "other"}), namespace)
        cluster.apply(bare_pod("elsewhere", {"app": "watched"}), other)
        watcher = PodWatcher(Kube(cluster.credentials(), [namespace], "app=watched"))
        seen = Seen()
        running = asyncio.create_task(watcher.run(seen))
        try:
            await eventually(lambda: "before" in seen.names(None), 20, "the listed pod")
            cluster.apply(bare_pod("after", {"app": "watched"}), namespace)
            await eventually(lambda: "after" in seen.names("ADDED"), 20, "the new pod")
            assert {name for _, name in seen.events} == {"before", "after"}
        finally:
            running.cancel()
    finally:
        cluster.delete_namespace(other)


async def test_a_pod_the_controller_cannot_read_is_logged_and_skipped(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch goes on: an exception would otherwise end it and relist for ever."""
    settings = Settings(etcd_endpoints=["http://127.0.0.1:1"], owner_id="odd")
    app = App.create(settings, cluster.credentials())
    app.on_pod("ADDED", {"metadata": {"name": "odd", "namespace": "shop"}})  # no uid
    assert "pod shop/odd skipped" in caplog.text
    assert app.controller.state.pods == {}


class FaultyWatches(Kube):
    """The real API server behind a flaky network: the first `broken` watch requests fail
    before any byte (a dropped connection), and with `ends_at_once` every watch ends at once
    with nothing in it (a proxy that closes long requests)."""

    def __init__(self, kube: Kube, *, broken: int = 0, ends_at_once: bool = False) -> None:
        super().__init__(kube.login, kube.namespaces, kube.pod_selector)
        self.broken, self.ends_at_once, self.watches = broken, ends_at_once, 0

    async def watch_pods(
        self, namespace: str | None, version: str, seconds: int, idle: float
    ) -> AsyncIterator[dict[str, Any]]:
        self.watches += 1
        if self.watches <= self.broken:
            raise ConnectionResetError("connection reset by peer")
        if self.ends_at_once:
            return
        async for event in super().watch_pods(namespace, version, seconds, idle):
            yield event


async def test_a_failed_watch_resumes_from_its_version_without_a_relist(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dropped watch connection resumes where it was: the change made meanwhile arrives as
    a watch event, and no pod is handed over again as a relist would."""
    monkeypatch.setattr(podwatch, "RETRY_FIRST", 0.5)
    cluster.apply(bare_pod("listed"), namespace)
    kube = FaultyWatches(Kube(cluster.credentials(), [namespace]), broken=1)
    seen = Seen()
    running = asyncio.create_task(PodWatcher(kube).run(seen))
    try:
        await eventually(lambda: seen.names(None) == {"listed"}, 20, "the listed pod")
        cluster.apply(bare_pod("late"), namespace)
        await eventually(lambda: "late" in seen.names("ADDED"), 20, "the change after the gap")
        assert kube.watches >= 2
        assert [e for e in seen.events if e[0] is None] == [(None, "listed")]  # listed once
    finally:
        running.cancel()


async def test_a_watch_that_ends_at_once_is_not_retried_in_a_hot_loop(
    cluster: Cluster, namespace: str
) -> None:
    kube = FaultyWatches(Kube(cluster.credentials(), [namespace]), ends_at_once=True)
    running = asyncio.create_task(PodWatcher(kube).run(Seen()))
    try:
        await eventually(lambda: kube.watches >= 1, 20, "the first watch")
        await asyncio.sleep(3)  # the window the request rate is measured over
        assert kube.watches <= 6, f"{kube.watches} watch requests in 3 s"
    finally:
        running.cancel()


class ExpiringWatch(Kube):
    """The first watch waits for `expire`, then answers 410 Gone (the version it started
    from is compacted away), as after a long disconnection; later watches are real."""

    def __init__(self, kube: Kube) -> None:
        super().__init__(kube.login, kube.namespaces, kube.pod_selector)
        self.expire, self.watches = asyncio.Event(), 0

    async def watch_pods(
        self, namespace: str | None, version: str, seconds: int, idle: float
    ) -> AsyncIterator[dict[str, Any]]:
        self.watches += 1
        if self.watches == 1:
            await self.expire.wait()
            yield {"type": "ERROR", "object": {"code": 410, "message": "too old"}}
            return
        async for event in super().watch_pods(namespace, version, seconds, idle):
            yield event


async def test_a_relist_after_410_reports_the_pods_it_no_longer_finds(
    cluster: Cluster, namespace: str
) -> None:
    """A pod deleted while no watch ran shows in no event: the relist after 410 Gone says
    which UIDs it found, so the controller forgets the others at once, not at a sweep."""
    for name in ("kept", "gone"):
        cluster.apply(bare_pod(name), namespace)
    uids = {
        name: cluster.get_json("pod", name, "-n", namespace)["metadata"]["uid"]
        for name in ("kept", "gone")
    }
    listed: list[tuple[str | None, set[str]]] = []
    kube = ExpiringWatch(Kube(cluster.credentials(), [namespace]))
    watcher = PodWatcher(kube, lambda scope, found: listed.append((scope, found)))
    running = asyncio.create_task(watcher.run(Seen()))
    try:
        await eventually(lambda: len(listed) == 1, 20, "the first list")
        assert listed[0] == (namespace, set(uids.values()))
        cluster.kubectl("delete", "pod", "gone", "-n", namespace, "--wait=true")
        kube.expire.set()
        await eventually(lambda: len(listed) == 2, 20, "the relist after 410")
        assert listed[1] == (namespace, {uids["kept"]})
    finally:
        running.cancel()
