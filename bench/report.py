"""From the rounds' raw figures to the run's report: medians with spread, ratios, verdicts, Markdown.

Pure functions over plain data (no service, no clock), so the arithmetic and the rendering are tested
(tests/unit/test_bench_report.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.stats import Spread, ratio, spread
from bench.targets import PART_SUBJECTS, Verdict, evaluate_all


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    #: In the main table and the chart; the others have a table of their own.
    main: bool = True


METRICS = (
    Metric("single_rate", "single send", "/s", True),
    Metric("batch_rate", "send_many / batch", "/s", True),
    Metric("e2e_rate", "end to end", "/s", True),
    Metric("drain_rate", "drain", "/s", True),
    Metric("latency_p50_ms", "send->start p50", "ms", False),
    Metric("latency_p99_ms", "send->start p99", "ms", False),
    Metric("rss_total_mib", "worker peak RSS, sum", "MiB", False),
    Metric("rss_process_mib", "worker peak RSS, largest process", "MiB", False),
    Metric("single_queued_rate", "single send, until RabbitMQ holds all", "/s", True, main=False),
    Metric("batch_queued_rate", "batch, until RabbitMQ holds all", "/s", True, main=False),
)
MAIN_METRICS = tuple(metric for metric in METRICS if metric.main)
METRIC_BY_KEY = {metric.key: metric for metric in METRICS}
#: The peers cogman is compared with, by role, in table order.
PEERS = (
    ("ceiling", "ceiling"),
    ("kombu-confirm", "kombu confirm"),
    ("celery", "Celery"),
    ("celery-confirm", "Celery with confirms"),
    ("dramatiq", "Dramatiq"),
    ("dramatiq-confirm", "Dramatiq with confirms"),
)


@dataclass
class RowSummary:
    key: str
    label: str
    role: str | None
    has_batch: bool
    rounds: list[Mapping[str, Any]]
    errors: list[str] = field(default_factory=list)
    spreads: dict[str, Spread | None] = field(default_factory=dict)

    def median(self, metric: str) -> float | None:
        found = self.spreads.get(metric)
        return found.median if found is not None else None

    def applies(self, metric: str) -> bool:
        return not metric.startswith("batch_") or self.has_batch

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "role": self.role,
            "has_batch": self.has_batch,
            "errors": self.errors,
            "rounds": list(self.rounds),
            "summary": {k: (s.to_dict() if s else None) for k, s in self.spreads.items()},
        }


def summarize(
    key: str, label: str, role: str | None, has_batch: bool, rounds: Sequence[Mapping[str, Any]]
) -> RowSummary:
    """``rounds``: one ``{"figures": {...}, "error": str | None}`` per round this row ran."""
    summary = RowSummary(key, label, role, has_batch, list(rounds))
    for index, outcome in enumerate(rounds, start=1):
        if outcome.get("error"):
            summary.errors.append(f"round {index}: {outcome['error']}")
    for metric in METRICS:
        if summary.applies(metric.key):
            summary.spreads[metric.key] = spread([r.get("figures", {}).get(metric.key) for r in rounds])
    return summary


def medians_by_role(rows: Sequence[RowSummary]) -> dict[str, dict[str, float | None]]:
    return {row.role: {m.key: row.median(m.key) for m in METRICS} for row in rows if row.role is not None}


def verdicts(rows: Sequence[RowSummary]) -> list[Verdict]:
    return evaluate_all(medians_by_role(rows))


def format_number(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:.1f} {unit}"


def format_spread(found: Spread | None, unit: str) -> str:
    if found is None:
        return "—"
    text = format_number(found.median, unit)
    if found.rounds > 1:
        low, high = format_number(found.low, unit), format_number(found.high, unit)
        text += f" ({low.split()[0].removesuffix('/s')}-{high.split()[0].removesuffix('/s')})"
    return text


def format_cell(row: RowSummary, metric: Metric) -> str:
    if not row.applies(metric.key):
        return "n/a"
    return format_spread(row.spreads.get(metric.key), metric.unit)


def format_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _escape(text: str, limit: int = 220) -> str:
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status(row: RowSummary) -> str:
    if not row.errors:
        return "ok"
    failed = len(row.errors)
    return f"failed {failed}/{len(row.rounds)}: " + "; ".join(_escape(e) for e in row.errors)


def table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def figures_table(rows: Sequence[RowSummary]) -> str:
    header = ["system", *(m.title for m in MAIN_METRICS), "status"]
    return table(header, [[row.label, *(format_cell(row, m) for m in MAIN_METRICS), status(row)] for row in rows])


def sends_table(rows: Sequence[RowSummary]) -> str:
    """Send rates to the return of the last call, and to the moment RabbitMQ held every message."""
    metrics = [METRIC_BY_KEY[k] for k in ("single_rate", "single_queued_rate", "batch_rate", "batch_queued_rate")]
    lines = [[row.label, *(format_cell(row, m) for m in metrics)] for row in rows]
    return table(["system", *(m.title for m in metrics)], lines)


def ceiling_ratios(rows: Sequence[RowSummary]) -> dict[str, dict[str, float | None]]:
    """Each row's figure over the ceiling's; a batch rate is compared with the ceiling's single send."""
    ceiling = next((row for row in rows if row.role == "ceiling"), None)
    out: dict[str, dict[str, float | None]] = {}
    for row in rows:
        out[row.key] = {}
        for metric in ("single_rate", "batch_rate", "e2e_rate", "drain_rate", "latency_p50_ms"):
            reference = "single_rate" if metric == "batch_rate" else metric
            value = row.median(metric) if row.applies(metric) else None
            out[row.key][metric] = ratio(value, ceiling.median(reference) if ceiling else None)
    return out


def ceiling_table(rows: Sequence[RowSummary]) -> str:
    ratios = ceiling_ratios(rows)
    header = ["system", "single send", "batch (/ ceiling single send)", "end to end", "drain", "send->start p50"]
    lines = [[row.label, *(format_ratio(v) for v in ratios[row.key].values())] for row in rows]
    return table(header, lines)


#: (title, cogman's metric, the peer's metric) for the cogman-to-peer tables.
PEER_FIGURES = (
    ("single send", "single_rate", "single_rate"),
    ("send_many / peer's single send", "batch_rate", "single_rate"),
    ("send_many / peer's batch", "batch_rate", "batch_rate"),
    ("end to end", "e2e_rate", "e2e_rate"),
    ("drain", "drain_rate", "drain_rate"),
    ("send->start p50 (lower is better)", "latency_p50_ms", "latency_p50_ms"),
    ("send->start p99 (lower is better)", "latency_p99_ms", "latency_p99_ms"),
    ("worker RSS, largest process (lower is better)", "rss_process_mib", "rss_process_mib"),
)


def peer_ratios(cogman: RowSummary, rows: Sequence[RowSummary]) -> dict[str, dict[str, float | None]]:
    by_role = {row.role: row for row in rows if row.role is not None}
    out: dict[str, dict[str, float | None]] = {}
    for title, mine, theirs in PEER_FIGURES:
        out[title] = {}
        for role, _ in PEERS:
            peer = by_role.get(role)
            reference = peer.median(theirs) if peer is not None and peer.applies(theirs) else None
            out[title][role] = ratio(cogman.median(mine), reference)
    return out


def round_figure(row: RowSummary, index: int, metric: str) -> float | None:
    """``metric`` of round ``index`` (from 0) of ``row``, or None when that round failed or lacks it."""
    if index >= len(row.rounds) or row.rounds[index].get("error") or not row.applies(metric):
        return None
    value = row.rounds[index].get("figures", {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def peer_round_ratios(cogman: RowSummary, rows: Sequence[RowSummary]) -> dict[str, dict[str, list[float | None]]]:
    """The same ratios round by round: both rows ran interleaved in the same round, on the same load."""
    by_role = {row.role: row for row in rows if row.role is not None}
    out: dict[str, dict[str, list[float | None]]] = {}
    for title, mine, theirs in PEER_FIGURES:
        out[title] = {}
        for role, _ in PEERS:
            peer = by_role.get(role)
            count = max(len(cogman.rounds), len(peer.rounds) if peer else 0)
            out[title][role] = [
                ratio(round_figure(cogman, i, mine), round_figure(peer, i, theirs) if peer else None)
                for i in range(count)
            ]
    return out


def format_ratios(median: float | None, per_round: Sequence[float | None]) -> str:
    """The ratio of medians, then each round's own ratio when there were several rounds."""
    text = format_ratio(median)
    if len(per_round) > 1 and median is not None:
        text += " (" + ", ".join(format_ratio(v) for v in per_round) + ")"
    return text


def peer_table(cogman: RowSummary, rows: Sequence[RowSummary]) -> str:
    ratios, per_round = peer_ratios(cogman, rows), peer_round_ratios(cogman, rows)
    header = ["figure", *(f"cogman / {name}" for _, name in PEERS)]
    lines = [
        [title, *(format_ratios(by_peer[role], per_round[title][role]) for role, _ in PEERS)]
        for title, by_peer in ratios.items()
    ]
    return table(header, lines)


def verdict_table(found: Sequence[Verdict]) -> str:
    lines = []
    for verdict in found:
        unit = "MiB" if verdict.target.reference is None else "x"
        value = "—" if verdict.value is None else f"{verdict.value:.2f}{' ' if unit == 'MiB' else ''}{unit}"
        mark = {True: "pass", False: "FAIL", None: "n/a"}[verdict.passed]
        lines.append([verdict.target.name, f"`{verdict.target.describe()}`", value, mark])
    return table(["target", "rule (ratio of medians)", "measured", "verdict"], lines)


def render_markdown(meta: Mapping[str, Any], rows: Sequence[RowSummary], definitions: str) -> str:
    parts = [f"# cogman benchmark, {meta.get('started', '?')}", ""]
    if meta.get("quick"):
        parts += ["**Smoke run (`--quick`): small N, one round: noisy, not figures to quote.**", ""]
    if meta.get("interrupted"):
        parts += ["**Interrupted: only the rounds that finished are included.**", ""]
    parts += [
        f"Command: `{meta.get('command', '?')}`. N = {meta.get('tasks', '?'):,} tasks a phase, "
        f"{meta.get('rounds_done', '?')} of {meta.get('rounds', '?')} round(s) interleaved, "
        f"latency sample {meta.get('latency_samples', '?')}, batches of {meta.get('batch_size', '?')}.",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()) + ".",
        f"CPUs: {meta.get('cpus', '?')}; load average at start {meta.get('load_start', '?')}, "
        f"at end {meta.get('load_end', '?')}.",
        "",
        "## Figures (median of rounds, min-max in parentheses)",
        "",
        figures_table(rows),
        "",
        "## Sends: to the last call's return, and until RabbitMQ holds every message",
        "",
        sends_table(rows),
        "",
        "## Ratio to the ceiling (raw kombu, no confirms)",
        "",
        ceiling_table(rows),
        "",
    ]
    cogman_rows = [row for row in rows if row.key.startswith("cogman")]
    for row in cogman_rows:
        parts += [
            f"## {row.label}: ratio to each peer (of medians; each round's own ratio in parentheses)",
            "",
            peer_table(row, rows),
            "",
        ]
    found = verdicts(rows)
    for part, subject in PART_SUBJECTS.items():
        row = next((row for row in rows if row.role == subject), None)
        parts += [
            f"## Targets of issue 25, part {part} ({row.label if row else f'no {subject} row'})",
            "",
            verdict_table([verdict for verdict in found if verdict.target.subject == subject]),
            "",
        ]
    parts += [
        "## What each figure means",
        "",
        definitions.strip(),
        "",
    ]
    return "\n".join(parts)
