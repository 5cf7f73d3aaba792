"""Issue 11's periodic tasks on the real RabbitMQ and Redis: three ``cogman beat`` processes send each tick
of an every-second schedule once (records, messages in the queue, runs), ``worker --beat`` runs its own
beat, a beat back from downtime sends at most ``catch_up`` late ticks, and ``cogman periodic`` lists the
schedules with their next and last run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from cogman import App, Status
from cogman.backends.base import TaskQuery
from cogman.record import TaskRecord
from cogman.scheduling.beat import Beat
from tests.integration.rabbit_helpers import ROOT, depth, wait_for

APP = "tests.integration.workflow_app"


@pytest.fixture
def env(worker_env: dict[str, str]) -> dict[str, str]:
    return {**worker_env, "COGMAN_TEST_PERIODIC": "1"}


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[App]:
    app = App("beat-client", broker=env["COGMAN_BROKER_URL"], backend=env["COGMAN_BACKEND_URL"],
              redis_prefix=env["COGMAN_TEST_PREFIX"])  # fmt: skip
    yield app
    app.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop(process)


def cogman(processes: list, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m cogman -A workflow_app ARGS`` as a child process."""
    output = open(log, "ab")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen([sys.executable, "-m", "cogman", "-A", APP, *args], cwd=ROOT,
                               env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, stdout=output,
                               stderr=subprocess.STDOUT)  # fmt: skip
    processes.append(process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def ticks(app: App, schedule: str = "every-second") -> list[TaskRecord]:
    return app.backend.query(TaskQuery(primary_key=f"periodic:{schedule}", limit=1000)).records


def runs(env: dict[str, str]) -> dict[str, int]:
    counts = redis.Redis.from_url(env["COGMAN_BACKEND_URL"]).hgetall(f"{env['COGMAN_TEST_PREFIX']}:runs:tick")
    return {key.decode(): int(value) for key, value in counts.items()}


def test_three_beats_send_every_tick_once(
    client: App, env: dict[str, str], processes: list, tmp_path: Path, rabbit: str
):
    beats = [cogman(processes, env, tmp_path / f"beat-{i}.log", "--log-level", "INFO", "beat") for i in range(3)]
    wait_for(lambda: len(ticks(client)) >= 4, 60, "four ticks of the every-second schedule")
    for beat in beats:
        stop(beat)
    assert [beat.returncode for beat in beats] == [0, 0, 0]
    recorded = ticks(client)
    moments = sorted(record.payload["periodic"]["tick"] for record in recorded)
    assert len(moments) == len(set(moments)) >= 4
    others = len(ticks(client, "paris-morning"))  # 0, unless the test runs at 9:00 in Paris
    assert depth(rabbit, "high_priority_queue_0") == len(recorded) + others  # one message per tick
    worker = cogman(processes, env, tmp_path / "worker.log", "worker", "-c", "4")
    wait_for(lambda: all(r.status is Status.SUCCESS for r in ticks(client)), 60, "the worker to run every tick")
    stop(worker)
    assert runs(env) == {record.task_id: 1 for record in recorded}
    logs = "".join((tmp_path / f"beat-{i}.log").read_text() for i in range(3))
    assert logs.count("sent tick") == len(recorded) + others and "Traceback" not in logs


def test_a_worker_with_beat_sends_and_runs_the_ticks(client: App, env: dict[str, str], processes: list, tmp_path: Path):
    cogman(processes, env, tmp_path / "worker.log", "worker", "-c", "2", "--beat")
    wait_for(lambda: sum(r.status is Status.SUCCESS for r in ticks(client)) >= 2, 60, "two ticks run")
    assert set(runs(env).values()) == {1}


def test_a_beat_back_from_downtime_sends_at_most_the_catch_up(client: App, env: dict[str, str]):
    """Every beat was down for ten minutes: the first one back sends the newest missed tick only (the
    default catch_up=1), then the schedule goes on; a second beat coming back sends nothing more."""
    client.add_periodic("wf.tick", every=timedelta(seconds=1), name="downtime")
    now = [datetime.now(UTC).replace(microsecond=500_000)]
    first = Beat(client, clock=lambda: now[0])
    assert first.run_pending() == []  # never ran: nothing to catch up
    now[0] += timedelta(seconds=1)
    assert len(first.run_pending()) == 1
    now[0] += timedelta(minutes=10)
    assert len(Beat(client, clock=lambda: now[0]).run_pending()) == 1
    assert Beat(client, clock=lambda: now[0]).run_pending() == []
    assert len(ticks(client, "downtime")) == 2


def test_cogman_periodic_lists_the_schedules_with_their_next_and_last_run(
    client: App, env: dict[str, str], processes: list, tmp_path: Path
):
    beat = cogman(processes, env, tmp_path / "beat.log", "--log-level", "INFO", "beat")
    wait_for(lambda: len(ticks(client)) >= 1, 60, "a tick")
    stop(beat)
    run = [sys.executable, "-m", "cogman", "-A", APP, "periodic"]
    environment = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    listed = subprocess.run([*run, "--json"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    second, paris = rows["every-second"], rows["paris-morning"]
    newest = max(record.payload["periodic"]["tick"] for record in ticks(client))
    assert second["last_run"] == newest and second["last_status"] == "queued" and second["task"] == "wf.tick"
    assert datetime.fromisoformat(second["next_run"]) > datetime.fromisoformat(newest)
    assert paris["schedule"] == "0 9 * * * (Europe/Paris)" and paris["last_run"] is None
    next_paris = datetime.fromisoformat(paris["next_run"])
    assert next_paris.astimezone(UTC).hour in (7, 8) and next_paris.minute == 0  # 9:00 CEST or CET
    table = subprocess.run(run, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "every-second" in table.stdout and "Europe/Paris" in table.stdout
