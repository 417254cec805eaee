"""Where the operator spends its CPU under churn: py-spy samples, summarised.

`python -m bench.run --profile` records the operator with py-spy (non-blocking, so the
operator is not paused; the profiled churn is still a little slower: py-spy needs CPU too)
during the churn of one size, and writes the raw collapsed stacks next to the results
plus the top frames by own time (file:line) and by inclusive time (functions).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    """Samples a process for `seconds` into a collapsed-stack file."""

    def __init__(self, pid: int, output: Path, seconds: float, rate: int = 100) -> None:
        binary = py_spy()
        if binary is None:
            raise RuntimeError("py-spy not installed: pip install -e '.[bench]'")
        self.output = output
        self.args = [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(output),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Profiler:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return self

    def finish(self, top: int = 15) -> dict[str, Any]:
        assert self.proc is not None
        self.proc.wait(timeout=60)
        return summarise(self.output.read_text(), top)


_TRUNK = ("asyncio/", "<frozen", "threading.py", "selectors.py")


def _frame(frame: str) -> tuple[str, str]:
    """'func (kopf/x.py:123)' -> ('func (kopf/x.py:123)', 'func (kopf/x.py)'); py-spy
    already gives paths relative to site-packages or the source root."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    return f"{name} ({where.rstrip(')')})", f"{name} ({path})"


def summarise(collapsed: str, top: int = 15) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        own[frames[-1][0]] += count
        for function in {f[1] for f in frames}:
            inclusive[function] += count

    def share(counter: Counter[str], keep: Callable[[str, int], bool]) -> list[list[Any]]:
        ranked = [(k, v) for k, v in counter.most_common() if keep(k, v)][:top]
        return [[k, round(100 * v / max(total, 1), 1)] for k, v in ranked]

    def not_trunk(function: str, count: int) -> bool:
        """Leave out the event loop and the entry points every sample passes through."""
        where = function.rpartition(" (")[2]
        return count < 0.85 * total and not where.startswith(_TRUNK)

    return {
        "samples": total,
        "own_percent": share(own, lambda _, __: True),
        "inclusive_percent": share(inclusive, not_trunk),
    }
