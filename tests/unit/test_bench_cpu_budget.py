"""bench/cpu_budget.py's arithmetic: CPU a task from two snapshots, the rate it allows, the table."""

from __future__ import annotations

import pytest

from bench.cpu_budget import cpu_limit, medians, per_task, rows


def test_cpu_a_task_is_the_difference_of_the_snapshots_over_the_tasks_for_parts_in_both():
    before = {"sender": 1.0, "machine": 10.0, "redis": 2.0}
    after = {"sender": 1.5, "machine": 12.0}  # redis missing afterwards: not reported
    assert per_task(before, after, 10_000) == pytest.approx({"sender": 50.0, "machine": 200.0})


def test_the_cpu_limit_is_the_lower_of_all_cores_busy_and_the_senders_one_gil_busy():
    assert cpu_limit({"machine": 400.0, "sender": 100.0}, cores=2) == pytest.approx(5_000)  # cores bind
    assert cpu_limit({"machine": 150.0, "sender": 100.0}, cores=2) == pytest.approx(10_000)  # the sender binds


def test_medians_per_phase_and_part_skip_phases_a_system_has_not():
    rounds = [
        {"single": {"sender": 10.0, "rate": 100.0}, "e2e": {"sender": 30.0, "rate": 50.0}},
        {"single": {"sender": 20.0, "rate": 300.0}, "e2e": {"sender": 10.0, "rate": 70.0}},
        {"single": {"sender": 90.0, "rate": 200.0}, "e2e": {"sender": 20.0, "rate": 60.0}},
    ]
    assert medians(rounds) == {"single": {"sender": 20.0, "rate": 200.0}, "e2e": {"sender": 20.0, "rate": 60.0}}


def test_the_table_shows_the_share_of_the_cores_in_use_and_the_limit():
    figures = {"rate": 2_500.0, "sender": 100.0, "redis": 50.0, "rabbitmq": 80.0, "machine": 400.0}
    lines = list(rows({"cogman": {"single": figures}}, cores=2))
    assert lines[2] == "| cogman | single | 2,500/s | 100 us | - | 50 us | 80 us | 400 us | 1.00 of 2 | 5,000/s |"
