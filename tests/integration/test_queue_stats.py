"""Queue stats for autoscaling (issue 23): each task queue's ready messages, unacked deliveries, consumers
and the age of its oldest waiting task, against RabbitMQ and Redis, as ``GET /stats``, the API's and the
worker's ``/metrics`` and ``cogman queues`` give them; and ``Backend.oldest_queued`` on every backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import httpx
import pytest

from cogman import App, Priority, Status
from cogman.api import create_app
from cogman.backends.base import Backend
from cogman.middleware.queue_stats import QueueFigures, queue_snapshot
from tests.integration.api_helpers import serving
from tests.integration.rabbit_helpers import ROOT, wait_for
from tests.integration.test_backend_contract import made_backend, record
from tests.ports import free_ports

HIGH, LOW = "high_priority_queue_0", "low_priority_queue_0"


@pytest.fixture(params=["memory", "redis", "redis-sharded", "mongomock"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from made_backend(request, request.param)


def test_oldest_queued_reads_the_queued_records_oldest_first(backend: Backend):
    ages = [30.0, 50.0, 10.0, 40.0, 20.0]
    made = [record(age=age) for age in ages]
    backend.create(made)
    for rec in made:
        backend.transition(rec.task_id, Status.QUEUED)
    started, waiting = record(age=60), record(age=70)  # older, but not queued
    backend.create([started, waiting])
    backend.transition(started.task_id, Status.IN_PROGRESS)
    by_age = [rec.task_id for rec in sorted(made, key=lambda r: -ages[made.index(r)])]
    assert [r.task_id for r in backend.oldest_queued(3)] == by_age[:3]
    assert [r.task_id for r in backend.oldest_queued(100)] == by_age
    assert all(r.status is Status.QUEUED for r in backend.oldest_queued(100))
    assert backend.oldest_queued(0) == []


# RabbitMQ and Redis


@pytest.fixture
def env(worker_env: dict[str, str]) -> dict[str, str]:
    return worker_env


@pytest.fixture
def stack(env: dict[str, str]) -> Iterator[tuple[App, threading.Event]]:
    """An app whose ``stats.hold`` tasks block until the event is set; heartbeats every 0.2 s, its
    workers' metrics on a free port."""
    app = App("stats", broker=env["COGMAN_BROKER_URL"], backend=env["COGMAN_BACKEND_URL"],
              redis_prefix=env["COGMAN_TEST_PREFIX"], heartbeat_interval=0.2, metrics_port=free_ports())  # fmt: skip
    gate = threading.Event()

    @app.task(name="stats.hold")
    def hold() -> str:
        gate.wait(60)
        return "done"

    @app.task(name="stats.low", priority="low")
    def low() -> None:
        """Never run here."""

    yield app, gate
    gate.set()
    app.close()


def figure(app: App, queue: str) -> QueueFigures:
    return next(q for q in queue_snapshot(app.broker, app.backend, app.config).queues if q.name == queue)


def counts(queue: QueueFigures) -> tuple[int, int, int]:
    return queue.ready, queue.unacked, queue.consumers


def test_ready_unacked_and_consumers_match_what_was_published_and_started(stack: tuple[App, threading.Event]):
    app, gate = stack
    sent = [app.tasks["stats.hold"].delay() for _ in range(6)]
    assert all(result.wait_sent(30) for result in sent)
    before = figure(app, HIGH)
    assert (before.ready, before.unacked, before.consumers) == (6, 0, 0)
    worker = app.start_background(concurrency=1)
    try:
        held = min(6, worker.concurrency + worker.prefetch)  # one running, the prefetched rest buffered
        assert held < 6
        wait_for(lambda: counts(figure(app, HIGH)) == (6 - held, held, 1), 30, f"{6 - held} ready, {held} unacked")
        gate.set()
        for result in sent:
            assert result.get(timeout=60) == "done"
        wait_for(lambda: counts(figure(app, HIGH)) == (0, 0, 1), 30, "every delivery settled")
    finally:
        gate.set()
        worker.stop()
    assert figure(app, HIGH).consumers == 0


def test_the_oldest_age_grows_while_a_task_waits_and_drops_when_it_starts(stack: tuple[App, threading.Event]):
    app, gate = stack
    hold = app.tasks["stats.hold"]
    delayed = hold.send(countdown=3600)
    assert delayed.wait_sent(30)
    wait_for(lambda: delayed.record().status is Status.QUEUED, 30, "the delayed task queued")
    assert figure(app, HIGH).oldest_age_seconds is None  # waiting for its eta, not to start
    waiting = hold.delay()
    low = app.tasks["stats.low"].delay()
    wait_for(lambda: waiting.record().status is Status.QUEUED, 30, "the task queued")
    first = figure(app, HIGH).oldest_age_seconds
    assert first is not None and first >= 0
    wait_for(lambda: (figure(app, HIGH).oldest_age_seconds or 0) > first + 0.3, 30, "the age to grow")
    worker = app.start_background(concurrency=1, priorities=[Priority.HIGH])
    try:
        wait_for(lambda: waiting.record().status is Status.IN_PROGRESS, 30, "the task to start")
        assert figure(app, HIGH).oldest_age_seconds is None
        assert figure(app, LOW).oldest_age_seconds is not None  # the low family's task still waits
        assert low.record().status is Status.QUEUED
        gate.set()
        assert waiting.get(timeout=60) == "done"
    finally:
        gate.set()
        worker.stop()


def test_stats_json_and_metrics_names_in_the_api_and_the_worker(stack: tuple[App, threading.Event]):
    app, gate = stack
    port = app.config.metrics_port
    waiting = [app.tasks["stats.hold"].delay() for _ in range(2)]
    assert all(result.wait_sent(30) for result in waiting)
    with serving(create_app(app)) as base, httpx.Client(base_url=base, timeout=30) as http:
        body = http.get("/stats").json()["data"]
        assert set(body) == {"total", "queues", "oldest_exact", "reporting_workers", "read_at"}
        assert set(body["total"]) == {"ready", "unacked", "consumers", "oldest_age_seconds"}
        high = next(q for q in body["queues"] if q["name"] == HIGH)
        assert set(high) == {"name", "kind", "ready", "unacked", "consumers", "oldest_age_seconds", "exists"}
        assert (high["kind"], high["ready"], high["unacked"], high["consumers"]) == ("high", 2, 0, 0)
        assert body["total"]["ready"] == 2 and body["oldest_exact"] is True
        assert {q["kind"] for q in body["queues"]} == {"high", "low"}
        metrics = http.get("/metrics").text
    for name in ("cogman_queue_ready", "cogman_queue_unacked", "cogman_queue_consumers",
                 "cogman_queue_oldest_age_seconds"):  # fmt: skip
        assert f'{name}{{kind="high",queue="{HIGH}"}}' in metrics, name
    assert f'cogman_queue_ready{{kind="high",queue="{HIGH}"}} 2.0' in metrics
    worker = app.start_background(concurrency=1)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            scraped = response.read().decode()
        for name in ("cogman_queue_ready", "cogman_queue_unacked", "cogman_queue_consumers",
                     "cogman_queue_oldest_age_seconds"):  # fmt: skip
            assert f'{name}{{kind="high",queue="{HIGH}"}}' in scraped, name
        gate.set()
        for result in waiting:
            result.get(timeout=60)
    finally:
        gate.set()
        worker.stop()


def test_cogman_queues_shows_unacked_and_the_oldest_wait(stack: tuple[App, threading.Event], env: dict[str, str]):
    app, _ = stack
    waiting = app.tasks["stats.hold"].delay()
    wait_for(lambda: waiting.record().status is Status.QUEUED, 30, "the task queued")
    shown = subprocess.run(
        [sys.executable, "-m", "cogman", "-A", "tests.integration.unique_app", "queues"], cwd=ROOT,
        capture_output=True, text=True, timeout=60, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    header = next(line for line in lines if "queue" in line and "kind" in line)
    assert [c.strip() for c in header.split("┃")[1:-1]] == ["queue", "kind", "ready", "consumers", "unacked",
                                                            "oldest waiting (s)"]  # fmt: skip
    row = [c.strip() for c in next(line for line in lines if HIGH in line).split("│")[1:-1]]
    assert row[:5] == [HIGH, "high", "1", "0", "0"] and float(row[5]) >= 0
    low = [c.strip() for c in next(line for line in lines if LOW in line).split("│")[1:-1]]
    assert low[5] == "-"  # nothing waits in the low family
