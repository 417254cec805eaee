"""Warning Events (events.py) across tenants: one namespace's flood of Warnings delays
another's by a turn and never drops them (docs/annotations.md#events, R2-7)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import pytest

from etcd_registrar.controller import Notice
from etcd_registrar.events import WARNING_EVENT_BURST, WARNING_QUEUE_PER_NAMESPACE, EventPoster
from etcd_registrar.kube import Kube
from tests.aio import eventually


class Recorder:
    """Stands in for the API server's Event endpoint: records what is posted."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []  # (namespace, pod name)

    async def post_event(
        self, involved: Mapping[str, Any], type: str, reason: str, message: str
    ) -> None:
        self.posted.append((involved["metadata"]["namespace"], involved["metadata"]["name"]))


def warning(namespace: str, pod: str) -> Notice:
    meta = {"namespace": namespace, "name": pod, "uid": f"uid-{pod}"}
    ref: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": meta}
    return Notice("Warning", "InvalidRegistration", f"{pod}: fix it", ref)


@pytest.fixture
async def poster() -> AsyncIterator[tuple[EventPoster, Recorder]]:
    kube = Recorder()
    events = EventPoster(cast(Kube, kube))
    running = asyncio.ensure_future(events.run())
    yield events, kube
    running.cancel()
    events.stop()


async def test_a_flood_in_one_namespace_delays_anothers_warning_by_a_turn(
    poster: tuple[EventPoster, Recorder],
) -> None:
    events, kube = poster
    events.post([warning("flood", f"bad-{i}") for i in range(1000)])
    events.post([warning("quiet", "mine")])
    await eventually(lambda: len(kube.posted) >= WARNING_EVENT_BURST, 10, "the first burst")
    assert ("quiet", "mine") in kube.posted[:2]
    flooded = {pod for ns, pod in kube.posted if ns == "flood"}
    assert len(flooded) <= WARNING_QUEUE_PER_NAMESPACE  # the rest waits for the sweep


async def test_a_dropped_warning_is_posted_again_while_its_cause_remains() -> None:
    """Warnings over a namespace's share, or refused by the API server, are posted again
    after the next sweep if their cause remains; the others are forgotten (R2-7)."""
    kube = Recorder()
    events = EventPoster(cast(Kube, kube))
    flood = [warning("flood", f"bad-{i}") for i in range(WARNING_QUEUE_PER_NAMESPACE + 50)]
    events.post(flood)
    assert len(events.warnings) == WARNING_QUEUE_PER_NAMESPACE
    while events.warnings:  # posted
        events.warnings.take()
    fixed = flood[-10:]  # their pods were fixed or deleted before the sweep
    events.repost(flood[:-10])
    assert set(events.warnings) == {n.key for n in flood[WARNING_QUEUE_PER_NAMESPACE:-10]}
    assert not events.dropped
    events.repost(flood)
    assert not {n.key for n in fixed} & set(events.warnings)  # forgotten for good


async def test_a_warning_the_api_server_refused_is_posted_again() -> None:
    class Refusing(Recorder):
        async def post_event(
            self, involved: Mapping[str, Any], type: str, reason: str, message: str
        ) -> None:
            raise RuntimeError("the API server is overloaded")

    events = EventPoster(cast(Kube, Refusing()))
    notice = warning("quiet", "mine")
    events.post([notice])
    events.warnings.take()
    await events._post_one(notice)
    events.repost([notice])
    assert notice.key in events.warnings
