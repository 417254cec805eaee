"""The consumer's side of a fault run (issue #22): what a careful etcd consumer saw.

`ConsumerRecorder` watches every prefix in play with prevKV, as a consumer that does it
right: it reads each prefix, watches from the next revision, resumes after a broken stream
from the revision after its last event, follows the members that have a leader, and when
etcd compacted the history it would resume from, reads the prefix again and records the
difference (what a consumer's relist shows). Timestamps: time.monotonic() on arrival, the
clock of the pods' readiness record (tests/consumers/timeline.py `PodTimeline.wants`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc
from aetcd import rpc

from etcd_registrar.etcd import Etcd, EtcdConfig, EtcdError
from tests.faults.checker import Seen

REQUIRE_LEADER = (("hasleader", "true"),)  # a member cut off from the others refuses
RETRY = 0.2


def _range_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class ConsumerRecorder:
    """Records every change under `prefixes` in a thread of its own, so a test's blocking
    calls delay no timestamp. `with` starts it once every prefix is read and watched."""

    def __init__(self, endpoints: Sequence[str], prefixes: Sequence[str]) -> None:
        self.endpoints, self.prefixes = tuple(endpoints), tuple(prefixes)
        self.relists = 0  # watches that found their history compacted and read again
        self.resumes = 0  # watches resumed after a broken stream
        self._seen: list[Seen] = []
        self._view: dict[str, str] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: list[asyncio.Task[None]] = []
        self._etcd = Etcd(EtcdConfig(endpoints=self.endpoints, timeout=3))

    def __enter__(self) -> ConsumerRecorder:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def history(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def view(self) -> dict[str, str]:
        """The keys present as far as this consumer knows."""
        with self._lock:
            return dict(self._view)

    async def _start(self) -> None:
        for prefix in self.prefixes:
            revision = await self._read(prefix)
            self._tasks.append(asyncio.create_task(self._follow(prefix, revision + 1)))

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._etcd.close()

    async def _read(self, prefix: str) -> int:
        """Read the prefix (until etcd answers) and record how it differs from the view."""
        while True:
            try:
                kvs, revision = await self._etcd.get_prefix(prefix)
                break
            except EtcdError:
                await asyncio.sleep(RETRY)
        now, found = time.monotonic(), {kv.key: kv.value for kv in kvs}
        with self._lock:
            known = {k: v for k, v in self._view.items() if k.startswith(prefix)}
            for key in known.keys() - found.keys():
                self._record(Seen(now, key, None, known[key]))
            for key, value in found.items():
                if known.get(key) != value:
                    self._record(Seen(now, key, value, known.get(key)))
        return revision

    def _record(self, seen: Seen) -> None:
        self._seen.append(seen)
        if seen.value is None:
            self._view.pop(seen.key, None)
        else:
            self._view[seen.key] = seen.value

    async def _follow(self, prefix: str, revision: int) -> None:
        key = prefix.encode()
        create = rpc.WatchCreateRequest(key=key, range_end=_range_end(key), prev_kv=True)
        while True:
            create.start_revision = revision
            call: Any = self._etcd.member.watcher.Watch(
                metadata=REQUIRE_LEADER, wait_for_ready=True
            )
            try:
                await call.write(rpc.WatchRequest(create_request=create))
                async for response in call:
                    if response.compact_revision:
                        self.relists += 1
                        revision = await self._read(prefix) + 1
                        break
                    if response.canceled:
                        break  # e.g. the member lost its leader: watch again
                    now = time.monotonic()
                    with self._lock:
                        for event in response.events:
                            self._record(_seen(now, event))
                            revision = event.kv.mod_revision + 1
            except grpc.aio.AioRpcError:
                pass
            finally:
                call.cancel()
            self.resumes += 1
            await asyncio.sleep(RETRY)


def _seen(at: float, event: Any) -> Seen:
    prev = event.prev_kv.value.decode() if event.prev_kv.key else None
    value = None if event.type == rpc.Event.DELETE else event.kv.value.decode()
    return Seen(at, event.kv.key.decode(), value, prev)
