"""``cogman demo`` says what it shows, proves it from the records, and fits 80 columns."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta

from cogman.cli.demo import start_positions
from cogman.priority import Priority
from cogman.record import TaskRecord, utcnow
from cogman.status import Status
from tests.integration.rabbit_helpers import ROOT


def test_the_demo_explains_measures_and_fits_80_columns():
    done = subprocess.run(
        [sys.executable, "-m", "cogman", "demo", "-n", "60", "-c", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"},
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    too_long = [line for line in out.splitlines() if len(line) > 80]
    assert not too_long, too_long
    # what it shows, and that the failures are on purpose
    assert "30 low tasks are sent first, 30 high ones after" in out
    assert "1 demo.flaky task(s) fail their first two attempts" in out and "always fail" in out
    assert "failures are deliberate" in out
    # the outcome of those failures, from the records
    assert re.search(r"demo\.flaky\s+│ 1 succeeded, 0 failed, up to 3 attempt\(s\)", out), out
    assert re.search(r"demo\.broken\s+│ 0 succeeded, 1 failed, up to 2 attempt\(s\)", out), out
    # priorities, measured
    medians = re.search(r"median start position: high (\d+), low (\d+) \(of 60\)", out)
    assert medians is not None, out
    assert int(medians.group(1)) < int(medians.group(2))
    assert re.search(r"lows started before the last high: \d+ of 30", out)
    # one retried task's history: three attempts, failed twice then succeeded
    history = out.split("one task's history")[1].split("next")[0]
    assert [int(n) for n in re.findall(r"attempt (\d) \(", history)] == [1, 2, 3]
    assert history.count(" failed ") == 2 and "success" in history and "paid on attempt 3" in history
    assert re.search(r"\+\d+\.\d\d ms  in_progress", history)
    # the next step
    assert "examples/README.md" in out and "cogman -A examples.distributed worker" in out
    assert "Traceback" not in done.stderr


def first_attempt(priority: Priority, started_after_ms: float) -> TaskRecord:
    now = utcnow()
    record = TaskRecord(task_id=f"{priority.value}-{started_after_ms}", name="t", original_task_id="",
                        priority=priority, payload={}, created_at=now)  # fmt: skip
    history = ((Status.INITIATED, now), (Status.IN_PROGRESS, now + timedelta(milliseconds=started_after_ms)))
    return record.evolve(original_task_id=record.task_id, history=history)


def test_start_positions_rank_first_attempts_by_when_they_started():
    records = [first_attempt(Priority.LOW, 5), first_attempt(Priority.HIGH, 1), first_attempt(Priority.HIGH, 3),
               first_attempt(Priority.LOW, 2)]  # fmt: skip
    retry = records[0].evolve(task_id="retry", attempt=2)  # retries are not first attempts: left out
    assert start_positions([*records, retry]) == {Priority.HIGH: [1, 3], Priority.LOW: [2, 4]}


def test_the_walkthrough_shows_what_the_example_prints():
    """examples/README.md quotes the commands and the output that test_examples.py checks for real."""
    walkthrough = (ROOT / "examples" / "README.md").read_text()
    assert "cogman -A examples.distributed worker" in walkthrough
    assert "python -m examples.distributed" in walkthrough
    assert "COGMAN_BROKER_URL=" in walkthrough and "COGMAN_BACKEND_URL=" in walkthrough
    assert str([i * i for i in range(10)] + [sum(map(ord, "cogman"))]) in walkthrough
