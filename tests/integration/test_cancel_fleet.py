"""Cancel across a fleet (issue 23): RabbitMQ, Redis, and two real ``cogman worker`` processes.

Whether a task ran, started, stopped or got past its loop is read from marks its body writes to Redis
(tests/integration/cancel_app.py), never from cogman's records. A cancelled message must be acked
unrun: once the workers stop gracefully, nothing is left in any queue (an unacked message would be
back), and the marks say it never ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cogman import App, Status, chain, chord
from cogman.admin.actions import queue_report
from cogman.api import create_app
from cogman.errors import TaskCancelled
from cogman.signature import Signature
from tests.integration.api_helpers import serving
from tests.integration.rabbit_helpers import wait_for, worker_process
from tests.integration.redis_helpers import drop_prefix

APP = "tests.integration.cancel_app"
ROOT = Path(__file__).resolve().parents[2]


class Fleet:
    """The client app, the marks, and the worker processes (started on demand)."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.env = env
        self.tmp_path = tmp_path
        self.client = App("cancel-fleet", broker=env["COGMAN_BROKER_URL"], backend=env["COGMAN_BACKEND_URL"],
                          redis_prefix=env["COGMAN_TEST_PREFIX"])  # fmt: skip
        self.redis = redis.Redis.from_url(env["COGMAN_BACKEND_URL"])
        self.workers: list[subprocess.Popen[bytes]] = []

    def start(self, count: int = 2) -> None:
        for _ in range(count):
            log = self.tmp_path / f"worker{len(self.workers)}.log"
            self.workers.append(worker_process(APP, self.env, "-c", "2", log=log))
        wait_for(lambda: len(self.client.backend.live_workers()) >= len(self.workers), 60, "the workers' heartbeats")

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            worker.wait(90)

    def mark(self, kind: str, key: str) -> int:
        raw = self.redis.get(f"{self.env['COGMAN_TEST_PREFIX']}:marks:{kind}:{key}")
        return int(raw) if raw is not None else 0

    def send(self, name: str, *args: Any, **options: Any) -> Any:
        return self.client.send_task(name, args, **options)

    def settled(self) -> bool:
        report = queue_report(self.client)
        return report.total_ready == 0 and report.delayed == 0

    def ran_sentinel(self, countdown: float = 0) -> None:
        """A task sent now (after ``countdown``) ran: what was delivered before it was taken too."""
        key = f"sentinel-{uuid.uuid4().hex[:6]}"
        self.send("fleet.record_run", key, countdown=countdown or None)
        wait_for(lambda: self.mark("runs", key) == 1, 60, "the sentinel task to run")
        wait_for(self.settled, 60, "every queue to be empty")

    def stop_and_check_acked(self) -> None:
        """Stop the workers gracefully: a message one held unacked would be back in its queue."""
        self.stop()
        assert all(worker.returncode == 0 for worker in self.workers), [w.returncode for w in self.workers]
        assert self.settled()


@pytest.fixture
def fleet(rabbit: str, redis_url: str, tmp_path: Path) -> Iterator[Fleet]:
    prefix = f"cogman-cancel-{uuid.uuid4().hex[:8]}"
    env = {"COGMAN_BROKER_URL": rabbit, "COGMAN_BACKEND_URL": redis_url, "COGMAN_TEST_PREFIX": prefix}
    made = Fleet(env, tmp_path)
    try:
        yield made
    finally:
        for worker in made.workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(30)
        made.client.close()
        made.redis.close()
        drop_prefix(redis_url, prefix)


def test_cancelled_before_any_worker_runs_then_acked_unrun_by_a_fleet_started_later(fleet: Fleet):
    results = [fleet.send("fleet.record_run", f"early-{i}") for i in range(6)]
    for result in results:
        assert result.wait_sent(30)
    doomed, kept = results[:4], results[4:]
    assert fleet.client.cancel(doomed[0].id) is True
    assert all(result.cancel() for result in doomed[1:])
    assert {result.status for result in doomed} == {Status.CANCELLED}  # at once, with no worker running
    fleet.start(2)
    fleet.ran_sentinel()
    for result in kept:
        assert result.get(timeout=30) is None
    fleet.stop_and_check_acked()
    assert [fleet.mark("runs", f"early-{i}") for i in range(6)] == [0, 0, 0, 0, 1, 1]
    for result in doomed:
        with pytest.raises(TaskCancelled):
            result.get(timeout=1)


def test_a_cancelled_delayed_task_never_runs(fleet: Fleet):
    fleet.start(2)
    delayed = fleet.send("fleet.record_run", "delayed", countdown=1)
    assert delayed.cancel() is True
    fleet.ran_sentinel(countdown=3)  # due later than the cancelled one: that one left the ladder first
    fleet.stop_and_check_acked()
    assert fleet.mark("runs", "delayed") == 0
    assert delayed.status is Status.CANCELLED


def test_a_task_waiting_for_its_retry_is_cancelled_and_no_attempt_follows(fleet: Fleet):
    fleet.start(2)
    flaky = fleet.send("fleet.flaky", "flaky", retry=5)  # the budget is the sender's
    wait_for(lambda: flaky.latest().attempt == 2, 60, "the retry attempt to be spawned")
    assert flaky.cancel() is True
    fleet.ran_sentinel(countdown=5)  # the retry's backoff (2 s) is over by then
    fleet.stop_and_check_acked()
    assert fleet.mark("runs", "flaky") == 1
    latest = flaky.latest()
    assert (latest.attempt, latest.status) == (2, Status.CANCELLED)
    assert flaky.record().retry == 4


@pytest.mark.parametrize("name", ["fleet.slow", "fleet.slow_async"])
def test_a_running_task_is_interrupted_recorded_cancelled_and_its_worker_lives_on(fleet: Fleet, name: str):
    fleet.start(2)
    running = fleet.send(name, "running")
    wait_for(lambda: fleet.mark("started", "running"), 60, "the task to start")
    assert running.cancel() is True
    wait_for(lambda: fleet.mark("stopped", "running"), 10, "the handler to be interrupted")
    assert fleet.mark("after", "running") == 0
    with pytest.raises(TaskCancelled):
        running.get(timeout=10)
    pid = fleet.mark("started", "running")
    assert any(worker.pid == pid and worker.poll() is None for worker in fleet.workers)
    fleet.ran_sentinel()
    fleet.stop_and_check_acked()
    record = running.record()
    assert record.status is Status.CANCELLED and record.latest_attempt_id in (None, running.id)


def test_cancelling_a_chain_stops_its_running_step_and_the_later_ones_never_run(fleet: Fleet):
    fleet.start(2)
    slow = Signature("fleet.slow", ("chain-1",), app=fleet.client)
    step = Signature("fleet.record_run", ("chain-2",), app=fleet.client)
    handle = chain(slow, step).delay()
    wait_for(lambda: fleet.mark("started", "chain-1"), 60, "the first step to start")
    assert handle.cancel() is True
    wait_for(lambda: fleet.mark("stopped", "chain-1"), 10, "the first step to be interrupted")
    with pytest.raises(TaskCancelled):
        handle.get(timeout=10)
    fleet.ran_sentinel()
    fleet.stop_and_check_acked()
    assert fleet.mark("after", "chain-1") == 0 and fleet.mark("runs", "chain-2") == 0


def test_cancelling_a_chord_interrupts_its_members_and_the_callback_never_runs(fleet: Fleet):
    fleet.start(2)
    members = [Signature("fleet.slow", (f"member-{i}",), app=fleet.client) for i in range(3)]
    handle = chord(members, Signature("fleet.total", ("callback",), app=fleet.client)).delay()
    wait_for(lambda: all(fleet.mark("started", f"member-{i}") for i in range(3)), 60, "the members to start")
    assert handle.cancel() is True
    wait_for(lambda: all(fleet.mark("stopped", f"member-{i}") for i in range(3)), 10, "the members to stop")
    with pytest.raises(TaskCancelled):
        handle.get(timeout=10)
    fleet.ran_sentinel()
    fleet.stop_and_check_acked()
    assert fleet.mark("runs", "callback") == 0
    assert sum(fleet.mark("after", f"member-{i}") for i in range(3)) == 0


def cogman(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **fleet.env, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "cogman", "-A", APP, "cancel", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli_cancels_by_id_and_in_bulk_and_exits_non_zero_for_a_finished_task(fleet: Fleet):
    queued = [fleet.send("fleet.record_run", f"bulk-{i}") for i in range(5)]
    other = fleet.send("fleet.flaky", "other")
    single = fleet.send("fleet.record_run", "single", countdown=60)
    for result in [*queued, other]:
        assert result.wait_sent(30)
    by_id = cogman(fleet, single.id)
    assert by_id.returncode == 0, by_id.stderr
    assert single.status is Status.CANCELLED
    again = cogman(fleet, single.id)
    assert again.returncode == 1 and "cancelled already" in again.stderr
    assert cogman(fleet, "no-such-task").returncode == 1
    bulk = cogman(fleet, "--name", "fleet.record_run", "--status", "queued")
    assert bulk.returncode == 0, bulk.stderr
    assert "cancelled 5 task(s)" in bulk.stdout
    assert {result.status for result in queued} == {Status.CANCELLED}
    assert other.status is Status.QUEUED
    assert cogman(fleet, "--status", "success").returncode == 2
    assert cogman(fleet).returncode == 2
    fleet.start(1)
    fleet.ran_sentinel()
    fleet.stop_and_check_acked()
    assert sum(fleet.mark("runs", f"bulk-{i}") for i in range(5)) == 0


def test_api_cancels_by_id_and_in_bulk_behind_the_token(fleet: Fleet):
    waiting = [fleet.send("fleet.record_run", f"api-{i}", countdown=60) for i in range(3)]
    single = fleet.send("fleet.record_run", "api-single", countdown=60)
    with serving(create_app(fleet.client, token="s3cret")) as base, httpx.Client(base_url=base) as http:
        assert http.post("/cancel", json={"task_id": single.id}).status_code == 401
        http.headers["Authorization"] = "Bearer s3cret"
        done = http.post("/cancel", json={"task_id": single.id})
        assert done.status_code == 200 and done.json()["data"] == {"task_id": single.id, "status": "cancelled"}
        conflict = http.post("/cancel", json={"task_id": single.id})
        assert conflict.status_code == 409 and "cancelled already" in conflict.text
        assert http.post("/cancel", json={"task_id": "no-such-task"}).status_code == 404
        assert http.post("/cancel", json={}).status_code == 400
        assert http.post("/cancel", json={"status": "success"}).status_code == 400
        bulk = http.post("/cancel", json={"name": "fleet.record_run", "status": "queued"})
        assert bulk.status_code == 200, bulk.text
        assert sorted(bulk.json()["data"]["cancelled"]) == sorted(r.id for r in waiting)
    assert {result.status for result in waiting} == {Status.CANCELLED}
