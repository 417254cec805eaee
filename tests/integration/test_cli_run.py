"""`etcd-registrar run` against an API server it cannot reach: a real closed port, the real
command. It waits with one warning line per attempt and jittered backoff, never a traceback
and never urllib3's retry warnings."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Kubeconfig

pytestmark = pytest.mark.integration

RETRY = re.compile(
    r"API server (https://127\.0\.0\.1:\d+) not reachable \(Connection refused\); "
    r"retrying in (\d+\.\d) s$"
)
CLI = Path(sys.executable).with_name("etcd-registrar")


async def test_run_without_the_api_server_logs_one_line_per_retry(
    unreachable_kubeconfig: Kubeconfig,
) -> None:
    path, server = unreachable_kubeconfig
    proc = await asyncio.create_subprocess_exec(
        str(CLI), "run", "--kubeconfig", str(path),
        "--health-port", "0", "--metrics-port", "0",
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):  # attempts 1-4 wait at most 1 + 2 + 4 s in all
            while sum(bool(RETRY.search(line)) for line in lines) < 4:
                line = (await proc.stderr.readline()).decode()
                assert line, f"exited {await proc.wait()}: {''.join(lines)}"
                lines.append(line.rstrip("\n"))
    finally:
        proc.terminate()
        await proc.wait()
    assert "etcd-registrar" in lines[0] and "starting" in lines[0]
    retries = [RETRY.search(line) for line in lines[1:]]
    assert all(retries), f"lines other than one per retry: {lines}"
    assert {m[1] for m in retries if m} == {server}
    delays = [float(m[2]) for m in retries if m]
    assert max(delays) <= 8.0  # attempt n waits a jittered share of 2^n s (base 1 s, cap 30 s)
