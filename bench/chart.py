"""The PNG: rates, latencies and worker memory per row, medians with min-max whiskers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.report import METRIC_BY_KEY, RowSummary

PANELS = (
    ("tasks per second (higher is better)", ("single_rate", "batch_rate", "e2e_rate", "drain_rate")),
    ("send->start latency, ms (lower is better)", ("latency_p50_ms", "latency_p99_ms")),
    ("worker peak RSS, MiB (lower is better)", ("rss_process_mib", "rss_total_mib")),
)


def draw(rows: Sequence[RowSummary], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(PANELS), 1, figsize=(13, 4.2 * len(PANELS)))
    labels = [row.key for row in rows]
    for axis, (panel_title, metrics) in zip(axes, PANELS, strict=True):
        width = 0.8 / len(metrics)
        for index, metric in enumerate(metrics):
            positions, heights, below, above = [], [], [], []
            for position, row in enumerate(rows):
                found = row.spreads.get(metric)
                if found is None:
                    continue
                positions.append(position - 0.4 + width * (index + 0.5))
                heights.append(found.median)
                below.append(found.median - found.low)
                above.append(found.high - found.median)
            axis.bar(positions, heights, width, yerr=[below, above], capsize=3, label=METRIC_BY_KEY[metric].title)
        axis.set_title(panel_title)
        axis.set_xticks(range(len(rows)), labels, rotation=15, ha="right", fontsize=8)
        axis.legend(fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
