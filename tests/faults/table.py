"""Render a `make faults` report (.faults-report.jsonl) as the table of
docs/reliability.md: `python -m tests.faults.table .faults-report.jsonl`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEAD = (
    "| Fault | Lasted (s) | Stale keys (longest, s) | Missing keys (longest, s) | Wrong values"
    " | Resurrections | Ready pods' keys deleted (gone for, s) | Converged after (s) |"
    " Left behind |\n|---|---|---|---|---|---|---|---|---|"
)


def rows(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        run = json.loads(line)
        last = list(run["windows"])[-1]
        for name, lasted in run["windows"].items():
            s = run["per_window"][name]
            converge = run["converge_s"] if name == last else None
            out.append(
                f"| {name} | {lasted:.1f} | {s['stale']} ({s['stale_max_s']:.2f})"
                f" | {s['missing']} ({s['missing_max_s']:.2f}) | {s['wrong']}"
                f" | {s['resurrections']}"
                f" | {s['ready_deletes']} ({s['ready_deleted_max_s']:.2f})"
                f" | {'' if converge is None else f'{converge:.2f}'}"
                f" | {run['left_behind'] if name == last else ''} |"
            )
    return out


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.faults.table .faults-report.jsonl")
    lines = Path(sys.argv[1]).read_text().splitlines()
    print("\n".join([HEAD, *rows(lines)]))


if __name__ == "__main__":
    main()
