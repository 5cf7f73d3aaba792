"""A limited task while its Redis is away: the worker waits for the limiter as for any backend call and
never runs the task unlimited; once Redis is back, the task runs, once. A private redis-server (killed
and started again on its port), never the shared one; the real RabbitMQ."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from cogman import App, Status
from tests.ports import free_ports


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_ports()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            cwd="/tmp",
        )
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the private redis-server did not start"
                time.sleep(0.01)
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)
            self.process = None


@pytest.fixture
def away_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.kill()


def test_a_limited_task_waits_for_redis_and_runs_once_it_is_back(
    rabbit: str, away_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="cogman.worker")
    app = App("limits-outage", broker=rabbit, backend=away_redis.url)
    ran: list[float] = []

    @app.task(name="limited.during_outage", rate_limit="10/s")
    def during_outage(number: int) -> int:
        ran.append(time.time())
        return number

    worker = app.start_background(concurrency=1)
    try:
        assert during_outage.delay(0).get(timeout=30) == 0  # the limiter works while Redis is up
        away_redis.kill()
        result = during_outage.delay(1)  # its record is parked in memory; the message goes out
        deadline = time.monotonic() + 60
        while "cannot take a start of limited.during_outage yet" not in caplog.text:
            assert time.monotonic() < deadline, "the worker never waited for the limiter"
            time.sleep(0.05)
        assert len(ran) == 1  # it waits: not run unlimited
        back = time.time()
        away_redis.start()
        deadline = time.monotonic() + 60
        while app.backend.get(result.id) is None:  # the parked create is replayed first
            assert time.monotonic() < deadline, "the parked record was never replayed"
            time.sleep(0.05)
        assert result.get(timeout=60) == 1
    finally:
        worker.stop()
        app.close()
    assert len(ran) == 2 and ran[1] >= back
    assert result.record().status is Status.SUCCESS
