"""Supervised loops and the probes (issue #10): an unexpected exception restarts the loop;
one that keeps crashing is reported as failing, so /healthz turns red; probes answer on IPv4
and IPv6."""

from __future__ import annotations

import asyncio

import pytest

from etcd_registrar.health import EtcdCheck, Health, probe_routes, serve
from etcd_registrar.supervisor import CRASH_LIMIT, Backoff, Loop
from tests.aio import eventually
from tests.harness import free_port


async def _pong() -> None:
    """An etcd that always answers."""


async def test_a_crashing_loop_is_restarted_and_then_reported() -> None:
    runs = 0

    async def crash() -> None:
        nonlocal runs
        runs += 1
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    loop = Loop("etcd-writer", crash, Backoff(base=0.001, cap=0.001)).start()
    health = Health(EtcdCheck(_pong, timeout=1), lambda: True, lambda: 0.0, 1e9, lambda: None)
    health.loops, health.started = [loop], True
    try:
        await eventually(lambda: loop.failing is not None, 5, "the loop reported failing")
        assert runs >= CRASH_LIMIT  # restarted after each crash, not left dead
        ok, reason = health.live()
        assert not ok and "etcd-writer crashed" in reason
    finally:
        await loop.stop()
    assert loop.failing == "stopped"


async def test_a_loop_that_recovers_is_healthy() -> None:
    crashed = asyncio.Event()

    async def crash_once() -> None:
        if not crashed.is_set():
            crashed.set()
            raise KeyError("lease")
        await asyncio.Event().wait()

    loop = Loop("lease-keepalive", crash_once, Backoff(base=0.001, cap=0.001)).start()
    try:
        await eventually(lambda: crashed.is_set() and loop.crashes == 1, 5, "one crash")
        assert loop.failing is None
    finally:
        await loop.stop()


def test_liveness_fails_when_startup_overruns_its_deadline() -> None:
    health = Health(EtcdCheck(_pong, timeout=1), lambda: False, lambda: 0.0, 1e9, lambda: None)
    assert health.live() == (True, "starting")
    health.startup_deadline = 0.0
    ok, reason = health.live()
    assert not ok and "startup has not finished" in reason


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_probes_answer_on_ipv4_and_ipv6(host: str) -> None:
    """The kubelet probes the pod IP, which is IPv6 on IPv6-only clusters."""
    health = Health(EtcdCheck(_pong, timeout=1), lambda: True, lambda: 0.0, 1e9, lambda: None)
    port = free_port()
    runner = await serve(port, probe_routes(health))
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = await reader.read()
        writer.close()
        assert b" 200 OK" in answer.split(b"\r\n")[0] and answer.endswith(b"starting\n")
    finally:
        await runner.cleanup()
