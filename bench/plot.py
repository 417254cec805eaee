"""The latency distribution plot (docs/benchmark-latency.png): CDFs of per-transition
latency for the operator and the floor, one colour per N, churn and bursts."""

from __future__ import annotations

from pathlib import Path

FILE = "benchmark-latency.png"


def cdfs(raw: dict[int, dict[str, list[float]]], path: Path) -> bool:
    """CDFs of per-transition latency; False when matplotlib is not installed."""
    try:
        import matplotlib  # optional: the "bench" extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [
        ("churn/register", "steady churn: key put"),
        ("churn/deregister", "steady churn: key deleted"),
        ("burst/register", "burst, all ready: key put"),
        ("burst/deregister", "burst, all not ready: key deleted"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharey=True)
    colors = plt.get_cmap("viridis")
    for ax, (suffix, title) in zip(axes.flat, panels, strict=True):
        for i, n in enumerate(sorted(raw)):
            color = colors(i / max(1, len(raw) - 1))
            for who, style in (("operator", "-"), ("floor", "--")):
                values = sorted(max(v * 1000, 0.1) for v in raw[n].get(f"{who}/{suffix}", []))
                if values:
                    ys = [(j + 1) / len(values) for j in range(len(values))]
                    ax.plot(values, ys, style, color=color, label=f"{who} N={n:,}")
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("status change accepted → etcd event (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("fraction of transitions")
    axes[1][0].set_ylabel("fraction of transitions")
    axes[0][1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
