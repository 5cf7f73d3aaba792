"""Worker heartbeats and the operator's backend primitives on every backend (memory, Redis, mongomock,
several at once), the Heartbeat middleware of a real worker, and ``cogman ping`` / ``workers``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from cogman import App
from cogman.backends import Backend, create_backend
from cogman.config.settings import Config
from cogman.priority import Priority
from cogman.record import utcnow
from cogman.sending.client import new_record
from tests.integration.rabbit_helpers import ROOT, wait_for
from tests.integration.redis_helpers import drop_prefix


@pytest.fixture(params=["memory", "redis", "mongomock", "multi"])
def backend(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Backend]:
    prefix = f"hbtest-{uuid.uuid4().hex[:8]}"
    urls = {
        "memory": "memory://",
        "redis": redis_url,
        "mongomock": f"mongomock://{prefix}",
        "multi": [redis_url, f"mongomock://{prefix}"],
    }[request.param]
    store = create_backend(Config(backend_url=urls, redis_prefix=prefix))
    yield store
    store.close()
    drop_prefix(redis_url, prefix)


def test_heartbeats_expire_and_can_be_forgotten(backend: Backend):
    assert backend.live_workers() == []
    backend.record_heartbeat("w1", {"id": "w1", "app": "a", "queues": ["high_priority_queue_0"]}, ttl=60)
    backend.record_heartbeat("w2", {"id": "w2", "app": "b"}, ttl=0.3)
    assert sorted(w["id"] for w in backend.live_workers()) == ["w1", "w2"]
    assert next(w for w in backend.live_workers() if w["id"] == "w1")["queues"] == ["high_priority_queue_0"]
    wait_for(lambda: [w["id"] for w in backend.live_workers()] == ["w1"], 10, "w2's heartbeat to expire")
    backend.record_heartbeat("w1", {"id": "w1", "app": "a", "tasks_done": 5}, ttl=60)  # a new beat replaces
    assert backend.live_workers() == [{"id": "w1", "app": "a", "tasks_done": 5}]
    backend.forget_worker("w1")
    assert backend.live_workers() == []


def test_add_retries_raises_the_budget(backend: Backend):
    record = new_record("t", (), {}, priority=Priority.HIGH, retry=0, primary_key=None)
    backend.create([record])
    assert backend.add_retries("unknown", 1) is None
    assert backend.add_retries(record.task_id, 2) == 2
    assert backend.add_retries(record.task_id, 1) == 3
    stored = backend.get(record.task_id)
    assert stored is not None and stored.retry == 3
    with pytest.raises(ValueError):
        backend.add_retries(record.task_id, 0)


def test_a_worker_beats_while_it_runs_and_is_forgotten_when_it_stops(redis_url: str):
    prefix = f"hbtest-{uuid.uuid4().hex[:8]}"
    app = App("beating", broker="memory://", backend=redis_url, redis_prefix=prefix, heartbeat_interval=0.2)

    @app.task(name="beat.echo")
    def echo(value: int) -> int:
        return value

    worker = app.start_background(concurrency=3, priorities=["high"])
    try:
        wait_for(lambda: len(app.backend.live_workers()) == 1, 10, "the first heartbeat")
        info = app.backend.live_workers()[0]
        assert (info["app"], info["pid"], info["host"]) == ("beating", os.getpid(), socket.gethostname())
        assert (info["concurrency"], info["queues"], info["priorities"]) == (3, ["high_priority_queue_0"], ["high"])
        for result in [echo.delay(i) for i in range(4)]:
            result.get(timeout=10)
        wait_for(lambda: app.backend.live_workers()[0]["tasks_done"] == 4, 10, "a heartbeat counting the 4 tasks")
        assert app.backend.live_workers()[0]["outcomes"] == {"succeeded": 4}
    finally:
        worker.stop()
    try:
        assert app.backend.live_workers() == []
    finally:
        app.close()
        drop_prefix(redis_url, prefix)


def cogman(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cogman", "-A", "tests.admin_app", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def shared_env(redis_url: str) -> Iterator[dict[str, str]]:
    prefix = f"hbtest-{uuid.uuid4().hex[:8]}"
    yield {"COGMAN_BROKER_URL": "memory://", "COGMAN_BACKEND_URL": redis_url, "COGMAN_TEST_PREFIX": prefix}
    drop_prefix(redis_url, prefix)


def test_ping_exit_codes_follow_a_worker_process(shared_env: dict[str, str]):
    down = cogman(shared_env, "ping")
    assert down.returncode == 1 and "no worker of app admin reported in the last 30 s" in down.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "cogman", "-A", "tests.admin_app", "worker", "-c", "2"],
        cwd=ROOT,
        env={**os.environ, **shared_env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: cogman(shared_env, "ping").returncode == 0, 60, "ping to see the worker", interval=0.5)
        up = cogman(shared_env, "ping", "--within", "30", "--local")
        assert up.returncode == 0 and f":{worker.pid}:" in up.stdout
        listed = cogman(shared_env, "workers")
        assert listed.returncode == 0 and f":{worker.pid}:" in listed.stdout and "1 worker(s)" in listed.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
    gone = cogman(shared_env, "ping")
    assert gone.returncode == 1  # a stopped worker forgets its heartbeat at once


def test_ping_within_and_local_filter_heartbeats(shared_env: dict[str, str]):
    app = App("admin", backend=shared_env["COGMAN_BACKEND_URL"], redis_prefix=shared_env["COGMAN_TEST_PREFIX"])
    try:
        stale: dict[str, Any] = {"id": "old", "app": "admin", "host": socket.gethostname(), "pid": 1,
                                 "last_seen": (utcnow() - timedelta(seconds=120)).isoformat()}  # fmt: skip
        app.backend.record_heartbeat("old", stale, ttl=600)
        assert cogman(shared_env, "ping", "--within", "30").returncode == 1
        assert cogman(shared_env, "ping", "--within", "300").returncode == 0
        elsewhere = {**stale, "id": "far", "host": "another-host", "last_seen": utcnow().isoformat()}
        app.backend.record_heartbeat("far", elsewhere, ttl=600)
        assert cogman(shared_env, "ping").returncode == 0
        assert cogman(shared_env, "ping", "--local").returncode == 1
        other_app = {**elsewhere, "id": "other", "app": "someone-else", "host": socket.gethostname()}
        app.backend.record_heartbeat("other", other_app, ttl=600)
        assert cogman(shared_env, "ping", "--local").returncode == 1  # another app's worker does not count
        assert "someone-else" in cogman(shared_env, "workers", "--all-apps").stdout
        bad = cogman(shared_env, "ping", "--within", "-3")
        assert bad.returncode == 2 and "must be positive" in bad.stderr
    finally:
        app.close()
