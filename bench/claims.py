"""The tenancy claim check at scale (issue #19): how long admitting one key takes with
1,000 to 10,000 claimed ranges, against a scan of every claim (what a list would cost).

    python -m bench.claims        # prints a table; bench.run adds it to its results

Each claimed range belongs to a namespace of its own. Checked: a key its namespace may
write, a key inside another namespace's range (refused), whether a namespace may claim a new
range, and a range around all of them (refused at the first range inside it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from etcd_registrar.tenancy import Claims, Member

COUNTS = (1_000, 10_000)
ROUNDS = 2_000


def claimed(count: int) -> Claims:
    claims = Claims()
    for i in range(count):
        claims.join(f"/services/svc-{i:05d}/", Member(f"ns-{i}", f"pod-{i}", "2024-01-01"))
    return claims


def per_call_us(check: Callable[[], object], rounds: int = ROUNDS, repeats: int = 5) -> float:
    """The best of `repeats` timings (the machine's noise only ever adds)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(rounds):
            check()
        best = min(best, time.perf_counter() - start)
    return best / rounds * 1e6


def scan(claims: Claims, key: str, namespace: str) -> bool:
    """The check without an index: every claimed range against the key."""
    return all(
        entry.owner in (None, namespace) or not f"{key}/".startswith(identity)
        for identity, entry in claims.identities.items()
    )


def measure_one(count: int) -> dict[str, Any]:
    claims = claimed(count)
    middle = count // 2
    own = f"/services/svc-{middle:05d}/pod-a"
    return {
        "claims": count,
        "key_admitted_us": per_call_us(lambda: claims.key_blocker(own, f"ns-{middle}")),
        "key_refused_us": per_call_us(lambda: claims.key_blocker(own, "intruder")),
        "new_range_us": per_call_us(lambda: claims.may_claim("/services/new/", "x")),
        "range_around_all_us": per_call_us(lambda: claims.may_claim("/services/", "x")),
        "scan_us": per_call_us(lambda: scan(claims, own, "intruder"), rounds=10, repeats=3),
    }


def measure(counts: tuple[int, ...] = COUNTS) -> list[dict[str, Any]]:
    return [measure_one(count) for count in counts]


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| claims | key admitted µs | key refused µs | new range µs | range around all µs "
        "| a scan of all µs |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['claims']:,} | {r['key_admitted_us']:.2f} | {r['key_refused_us']:.2f} "
            f"| {r['new_range_us']:.2f} | {r['range_around_all_us']:.2f} | {r['scan_us']:.0f} |"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(table(measure())))
