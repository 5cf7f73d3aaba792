"""Writing a run's results under bench/results/: timestamped Markdown, JSON and PNG, and ``latest.*``."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.definitions import DEFINITIONS
from bench.report import RowSummary, ceiling_ratios, peer_ratios, render_markdown, verdicts

RESULTS = Path(__file__).resolve().parent / "results"


def document(meta: Mapping[str, Any], rows: Sequence[RowSummary]) -> dict[str, Any]:
    return {
        "meta": dict(meta),
        "rows": [row.to_dict() for row in rows],
        "ratios_to_ceiling": ceiling_ratios(rows),
        "cogman_to_peers": {row.key: peer_ratios(row, rows) for row in rows if row.key.startswith("cogman")},
        "targets": [verdict.to_dict() for verdict in verdicts(rows)],
    }


def write(meta: Mapping[str, Any], rows: Sequence[RowSummary], stamp: str, directory: Path = RESULTS) -> list[Path]:
    """Write the three files, copy them to ``latest.*``; returns the timestamped paths."""
    directory.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(meta, rows, DEFINITIONS)
    paths = [directory / f"{stamp}.md", directory / f"{stamp}.json"]
    paths[0].write_text(markdown)
    paths[1].write_text(json.dumps(document(meta, rows), indent=2) + "\n")
    try:
        from bench.chart import draw

        png = directory / f"{stamp}.png"
        draw(rows, png, f"cogman benchmark {stamp}" + (" (smoke run: noisy)" if meta.get("quick") else ""))
        paths.append(png)
    except Exception as exc:  # no matplotlib, or a drawing error: the tables still stand
        print(f"bench: no chart: {type(exc).__name__}: {exc}", file=sys.stderr)
    for path in paths:
        shutil.copyfile(path, directory / f"latest{path.suffix}")
    return paths
