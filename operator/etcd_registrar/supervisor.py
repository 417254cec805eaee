"""Long-running loops that survive their own bugs, and one retry policy for all of them.

A loop that raises an unexpected exception is logged with its traceback, counted, and
restarted after a jittered backoff: one bad input or unforeseen error never leaves the
operator half-alive (writer dead, keepalives running). A loop that keeps crashing is
reported as failing, so /healthz turns red and the kubelet restarts the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from etcd_registrar import metrics

logger = logging.getLogger(__name__)

CRASH_LIMIT = 5  # crashes in a row, each after a short run, before the loop counts as failing
HEALTHY_RUN = 60.0  # a run at least this long resets the crash count


class Backoff:
    """Exponential backoff with full jitter, so many operators never retry in lockstep."""

    def __init__(self, base: float = 0.2, cap: float = 5.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def delay(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2**self.attempt))  # noqa: S311
        self.attempt += 1
        return delay

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay())

    def reset(self) -> None:
        self.attempt = 0


class Loop:
    """One supervised long-running coroutine, restarted whenever it raises."""

    def __init__(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        backoff: Backoff | None = None,
    ) -> None:
        self.name, self.run = name, run
        self.backoff = backoff or Backoff(base=0.5, cap=30.0)
        self.crashes = 0  # in a row, each after a short run
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Loop:
        self.task = asyncio.create_task(self._supervise(), name=self.name)
        return self

    @property
    def failing(self) -> str | None:
        """Why this loop cannot be trusted to run, or None while it does."""
        if self.task is None or self.task.done():
            return "stopped"
        if self.crashes >= CRASH_LIMIT:
            return f"crashed {self.crashes} times in a row"
        return None

    async def _supervise(self) -> None:
        backoff = self.backoff
        while True:
            started = time.monotonic()
            try:
                await self.run()
                raise RuntimeError("returned; it must run until cancelled")
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.loop_crashes.labels(self.name).inc()
                if time.monotonic() - started >= HEALTHY_RUN:
                    self.crashes = 0
                    backoff.reset()
                self.crashes += 1
                logger.exception(
                    "loop %s crashed (%d in a row); restarting", self.name, self.crashes
                )
            await backoff.sleep()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
