"""The benchmark harness's pure parts: statistics, ratios, target verdicts, send-mode detection, tables.

No services and no timing: these check the arithmetic and the rendering the benchmark's figures rest on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from bench.report import (
    ceiling_ratios,
    figures_table,
    format_spread,
    peer_ratios,
    peer_round_ratios,
    peer_table,
    render_markdown,
    sends_table,
    summarize,
    verdicts,
)
from bench.stats import Spread, percentile, rate, ratio, spread
from bench.systems import cogman_systems, lean_systems, send_modes
from bench.targets import TARGETS, evaluate


def test_percentile_interpolates_between_closest_ranks():
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([float(v) for v in range(1, 101)], 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0], 0) == 1.0 and percentile([1.0, 2.0], 100) == 2.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_spread_is_median_min_max_of_rounds_that_produced_the_figure():
    assert spread([3.0, None, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0, 3)
    assert spread([None, float("nan")]) is None
    assert spread([5.0, 1.0]) == Spread(3.0, 1.0, 5.0, 2)


def test_ratio_and_rate_are_none_when_unmeasurable():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None and ratio(3.0, None) is None and ratio(3.0, 0.0) is None
    assert rate(1000, 0.5) == 2000 and rate(10, 0.0) is None


def test_spread_formatting_shows_the_range_only_over_several_rounds():
    assert format_spread(Spread(1234.4, 1100.0, 1300.0, 3), "/s") == "1,234/s (1,100-1,300)"
    assert format_spread(Spread(0.53, 0.5, 0.6, 1), "ms") == "0.53 ms"
    assert format_spread(Spread(0.53, 0.5, 0.61, 2), "ms") == "0.53 ms (0.50-0.61)"
    assert format_spread(None, "MiB") == "—"


def rounds(*figures: dict[str, float], error: str | None = None) -> list[dict[str, object]]:
    out: list[dict[str, object]] = [{"figures": f, "error": None} for f in figures]
    if error:
        out.append({"figures": {"single_rate": 1.0}, "error": error})
    return out


def run_rows():
    """A small run: the ceiling, kombu confirm, a cogman default row, Celery, a failed Dramatiq and Dramatiq
    with confirms."""
    return [
        summarize("kombu-plain", "ceiling", "ceiling", False, rounds({"single_rate": 9000, "latency_p50_ms": 0.5})),
        summarize("kombu-confirm", "confirm", "kombu-confirm", True, rounds({"single_rate": 1500, "batch_rate": 6000})),
        summarize(
            "cogman-fast",
            "cogman fast",
            "cogman-default",
            True,
            rounds(
                {"single_rate": 4000, "batch_rate": 9000, "e2e_rate": 2500, "latency_p50_ms": 0.9},
                {"single_rate": 5000, "batch_rate": 6000, "e2e_rate": 2100, "latency_p50_ms": 0.7},
                {"single_rate": 6000, "batch_rate": 7000, "e2e_rate": 2300, "latency_p50_ms": 0.8},
            ),
        ),
        summarize("celery", "Celery", "celery", False, rounds({"e2e_rate": 700, "batch_rate": 99})),
        summarize("dramatiq", "Dramatiq", "dramatiq", False, rounds(error="ProcessDied: worker | exited")),
        summarize(
            "dramatiq-confirm",
            "Dramatiq with confirms",
            "dramatiq-confirm",
            False,
            rounds(
                {"single_rate": 2000, "e2e_rate": 1000, "latency_p50_ms": 0.4},
                {"single_rate": 1000, "e2e_rate": 1000, "latency_p50_ms": 0.4},
                {"single_rate": 2000, "e2e_rate": 1100, "latency_p50_ms": 0.4},
            ),
        ),
    ]


def test_summary_takes_medians_and_collects_failures():
    rows = run_rows()
    cogman, celery, dramatiq = rows[2], rows[3], rows[4]
    assert cogman.median("single_rate") == 5000 and cogman.median("e2e_rate") == 2300
    assert cogman.spreads["batch_rate"] == Spread(7000, 6000, 9000, 3)
    assert "batch_rate" not in celery.spreads  # no batch send: n/a, not a figure
    assert dramatiq.errors == ["round 1: ProcessDied: worker | exited"]
    assert dramatiq.median("single_rate") == 1.0  # figures measured before the failure are kept


def test_figures_table_marks_not_applicable_missing_and_failed():
    table = figures_table(run_rows())
    lines = table.splitlines()
    assert all(line.count("|") == lines[0].count("|") for line in lines)  # no stray pipe from a reason
    celery = next(line for line in lines if line.startswith("| Celery"))
    assert "| n/a |" in celery and "| — |" in celery and celery.endswith("| ok |")
    dramatiq = next(line for line in lines if line.startswith("| Dramatiq"))
    assert "failed 1/1: round 1: ProcessDied: worker / exited" in dramatiq


def test_sends_table_puts_queued_rates_beside_the_return_rates():
    row = summarize(
        "kombu-confirm", "confirm", "kombu-confirm", True, rounds({"single_rate": 900.0, "batch_queued_rate": 5000.0})
    )
    no_batch = summarize("celery", "Celery", "celery", False, rounds({"single_queued_rate": 400.0}))
    lines = sends_table([row, no_batch]).splitlines()
    assert lines[2] == "| confirm | 900/s | — | — | 5,000/s |"
    assert lines[3] == "| Celery | — | 400/s | n/a | n/a |"


def test_ratios_to_the_ceiling_and_to_peers():
    rows = run_rows()
    to_ceiling = ceiling_ratios(rows)["cogman-fast"]
    assert to_ceiling["single_rate"] == pytest.approx(5000 / 9000)
    assert to_ceiling["batch_rate"] == pytest.approx(7000 / 9000)  # against the ceiling's single send
    assert to_ceiling["e2e_rate"] is None  # the ceiling has no end-to-end figure here
    assert ceiling_ratios(rows)["celery"]["batch_rate"] is None
    peers = peer_ratios(rows[2], rows)
    assert peers["single send"]["kombu-confirm"] == pytest.approx(5000 / 1500)
    assert peers["send_many / peer's batch"]["kombu-confirm"] == pytest.approx(7000 / 6000)
    assert peers["send_many / peer's batch"]["celery"] is None  # Celery's stray batch figure is not used
    assert peers["end to end"]["celery"] == pytest.approx(2300 / 700)


def test_ratios_round_by_round_pair_the_rows_of_each_round():
    rows = run_rows()
    cogman = rows[2]
    per_round = peer_round_ratios(cogman, rows)
    assert per_round["single send"]["dramatiq-confirm"] == [4000 / 2000, 5000 / 1000, 6000 / 2000]
    assert per_round["end to end"]["dramatiq-confirm"] == pytest.approx([2.5, 2.1, 2300 / 1100])
    assert per_round["single send"]["dramatiq"] == [None, None, None]  # its only round failed
    assert per_round["end to end"]["celery-confirm"] == [None, None, None]  # no such row in this run
    line = next(row for row in peer_table(cogman, rows).splitlines() if row.startswith("| single send |"))
    assert "| 2.50x (2.00x, 5.00x, 3.00x) |" in line  # ratio of medians, then each round's


def test_target_verdicts_pass_fail_and_not_applicable():
    by_name = {verdict.target.name: verdict for verdict in verdicts(run_rows())}
    e2e = by_name["end to end >= 2x Dramatiq with confirms"]
    assert e2e.value == pytest.approx(2300 / 1000) and e2e.passed is True
    single = by_name["single send >= 2.5x Dramatiq with confirms"]
    assert single.value == pytest.approx(5000 / 2000) and single.passed is True  # at the threshold
    batch = by_name["send_many >= 5x Dramatiq with confirms' single send"]
    assert batch.value == pytest.approx(7000 / 2000) and batch.passed is False
    latency = by_name["send->start p50 <= 2x raw kombu (the ceiling)"]
    assert latency.value == pytest.approx(0.8 / 0.5) and latency.passed is True  # lower is better
    assert by_name["end to end >= 3x Celery with confirms"].passed is None  # no such row: no verdict
    assert by_name["worker RSS <= 60 MiB a process"].passed is None


def test_absolute_and_relative_targets_at_their_thresholds():
    rss = next(t for t in TARGETS if t.reference is None)
    assert evaluate(rss, {"cogman-default": {"rss_process_mib": 60.0}}).passed is True
    assert evaluate(rss, {"cogman-default": {"rss_process_mib": 60.1}}).passed is False
    drain = next(t for t in TARGETS if t.metric == "drain_rate")
    medians = {"cogman-default": {"drain_rate": 1300.0}, "dramatiq-confirm": {"drain_rate": 1000.0}}
    assert evaluate(drain, medians).passed is True
    medians["dramatiq-confirm"]["drain_rate"] = 1001.0
    assert evaluate(drain, medians).passed is False


@dataclass(frozen=True)
class TodaysConfig:
    broker_url: str = "memory://"
    backend_url: str = "memory://"


@dataclass(frozen=True)
class ModalConfig:
    broker_url: str = "memory://"
    backend_url: str = "memory://"
    send_mode: Literal["recorded", "confirmed", "experimental"] = "recorded"

    def __post_init__(self) -> None:
        if self.send_mode == "experimental":
            raise ValueError("not in this build")


def test_send_modes_follow_the_installed_config():
    assert send_modes(TodaysConfig) == ([None], None)
    assert send_modes(ModalConfig) == (["recorded", "confirmed"], "recorded")


def test_cogman_rows_one_per_mode_with_the_default_as_the_target_subject():
    rows = cogman_systems(["recorded", "confirmed"], "recorded")
    assert [row.key for row in rows] == ["cogman-recorded", "cogman-confirmed"]
    assert [row.role for row in rows] == ["cogman-default", None]
    assert rows[0].worker_argv == rows[1].worker_argv and "--processes" in rows[0].worker_argv
    (today,) = cogman_systems([None], None)
    assert today.role == "cogman-default" and today.send_mode is None


def test_markdown_report_flags_a_smoke_run():
    meta = {"quick": True, "tasks": 1000, "rounds": 1, "rounds_done": 1, "command": "python bench/run.py --quick"}
    text = render_markdown(meta, run_rows(), "definitions here")
    assert "Smoke run" in text and "`python bench/run.py --quick`" in text
    assert "## Targets of issue 25, part 1 (cogman fast)" in text and "| FAIL |" in text and "| pass |" in text
    assert "Smoke run" not in render_markdown({**meta, "quick": False}, run_rows(), "")


@dataclass(frozen=True)
class LeanConfig:
    broker_url: str = "memory://"
    backend_url: str = "memory://"
    profile: Literal["default", "lean"] = "default"


def test_the_lean_row_comes_with_a_config_that_has_the_profile():
    assert lean_systems(TodaysConfig) == []
    (row,) = lean_systems(LeanConfig)
    assert (row.key, row.role, row.send_mode) == ("cogman-lean", "cogman-lean", None)
    assert "bench.cogman_lean_tasks:app" in row.worker_argv and "--processes" in row.worker_argv


def test_part_two_targets_judge_the_lean_row_against_dramatiqs_default():
    lean = summarize(
        "cogman-lean",
        "cogman lean",
        "cogman-lean",
        True,
        rounds({"e2e_rate": 2400, "single_rate": 900, "drain_rate": 2400}),
    )
    dramatiq = summarize(
        "dramatiq", "Dramatiq", "dramatiq", False, rounds({"e2e_rate": 2000, "single_rate": 1000, "drain_rate": 2000})
    )
    by_name = {verdict.target.name: verdict for verdict in verdicts([lean, dramatiq])}
    assert by_name["lean: end to end >= 1.2x Dramatiq"].passed is True  # 1.2x: at the threshold
    assert by_name["lean: drain >= 1.2x Dramatiq"].passed is True
    single = by_name["lean: single send >= 1x Dramatiq"]
    assert single.value == pytest.approx(0.9) and single.passed is False
    assert by_name["end to end >= 2x Dramatiq with confirms"].passed is None  # no default row: part 1 n/a
    text = render_markdown({"tasks": 1000, "rounds": 1, "rounds_done": 1}, [lean, dramatiq], "")
    part_two = text.split("## Targets of issue 25, part 2 (cogman lean)", 1)[1].split("## What each", 1)[0]
    assert "lean: single send >= 1x Dramatiq" in part_two and "| FAIL |" in part_two
    assert "end to end >= 2x" not in part_two
