"""Kubernetes Events about pods, posted in the background and rate-limited.

An Event is one API request: a burst of thousands of transitions, or one tenant's 1,000
conflicting replicas, must not become thousands of requests. Normal Events wait for etcd to
have the keys they announce, and the ones over their rate limit are counted, not queued.
Warnings wait in a queue where namespaces take turns (docs/annotations.md#events): a tenant's flood
of Warnings delays another tenant's by a turn. A namespace queues at most
WARNING_QUEUE_PER_NAMESPACE; a Warning over that, or one the API server did not take, is
posted again after the next sweep if its cause remains (`repost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

from etcd_registrar import metrics
from etcd_registrar.controller import Notice, Outcome
from etcd_registrar.kube import Kube
from etcd_registrar.pacing import PacedQueue, TokenBucket

logger = logging.getLogger(__name__)

EVENT_WAIT = 60.0  # how long a "Registered" Event waits for etcd before it is dropped
# A rollout of 3 pods gets all of its Events, a burst of thousands gets the first BURST and
# then RATE per second.
NORMAL_EVENT_RATE, NORMAL_EVENT_BURST = 10.0, 100
WARNING_EVENT_RATE, WARNING_EVENT_BURST = 10.0, 100
WARNING_QUEUE_PER_NAMESPACE = 100

NoticeKey = tuple[str, str, str]  # pod uid, reason, message: the same Warning twice is one


class EventPoster:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.normal = TokenBucket(NORMAL_EVENT_RATE, NORMAL_EVENT_BURST)
        self.warnings: PacedQueue[NoticeKey, Notice] = PacedQueue(
            TokenBucket(WARNING_EVENT_RATE, WARNING_EVENT_BURST),
            per_tenant=WARNING_QUEUE_PER_NAMESPACE,
        )
        self.posts: set[asyncio.Task[None]] = set()
        self.dropped: dict[NoticeKey, Notice] = {}  # Warnings not posted, to post again

    def outcome(self, outcome: Outcome) -> None:
        """Post a pod event's Events: Warnings now, Normal ones once etcd has the keys."""
        self.post(outcome.now)
        if outcome.after_commit and outcome.committed is not None:
            if self.normal.take():
                self._track(self._post_when_committed(outcome))
            else:
                metrics.events_dropped.labels("Normal").inc(len(outcome.after_commit))

    def post(self, notices: list[Notice]) -> None:
        """Queue Warnings; post Normal Events now."""
        for notice in notices:
            if notice.type != "Warning":
                self._track(self._post_one(notice))
            elif not self.warnings.put(notice.namespace, notice.key, notice):
                metrics.events_dropped.labels("Warning").inc()
                self.dropped[notice.key] = notice

    def repost(self, current: Iterable[Notice]) -> None:
        """After a sweep: post again the Warnings dropped so far whose cause remains
        (`current`: every Warning that holds now); forget the others."""
        causes = {notice.key for notice in current}
        dropped, self.dropped = self.dropped, {}
        self.post([notice for key, notice in dropped.items() if key in causes])

    async def run(self) -> None:
        """Post the queued Warnings, the namespaces in turn, as fast as the rate allows."""
        while True:
            _, notice = await self.warnings.next()
            self._track(self._post_one(notice))

    async def _post_one(self, notice: Notice) -> None:
        try:
            await self.kube.post_event(notice.pod, notice.type, notice.reason, notice.message)
        except Exception as exc:  # an Event is informative; the registry is what matters
            logger.warning("could not post the %s Event: %s", notice.reason, exc)
            if notice.type == "Warning":
                self.dropped[notice.key] = notice

    async def _post_when_committed(self, outcome: Outcome) -> None:
        assert outcome.committed is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(outcome.committed), EVENT_WAIT)
            for notice in outcome.after_commit:
                self._track(self._post_one(notice))

    def _track(self, post: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(post)
        self.posts.add(task)
        task.add_done_callback(self.posts.discard)

    def stop(self) -> None:
        for task in self.posts:  # kopf would wait 5 s for stray tasks
            task.cancel()
