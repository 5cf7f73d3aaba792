"""Cancel while Redis is briefly away (issue 23): a TCP proxy in front of the shared Redis is the outage,
for the worker only (test_worker_reliability.py's ``redis_proxy``); the canceller reaches Redis directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from cogman import App, Status
from cogman.backends.redis.backend import RedisBackend
from cogman.errors import BackendUnavailable, TaskCancelled
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_worker_reliability import wait_until

LONG = 6000  #: loop rounds of 10 ms: 60 s


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of the shared Redis: killing it is a Redis outage for the app behind it only."""
    proxy = TcpProxy(6379)
    proxy.start()
    try:
        yield proxy, f"redis://127.0.0.1:{proxy.port}/{redis_url.rsplit('/', 1)[-1]}"
    finally:
        proxy.kill()


def test_the_poll_outlives_a_redis_outage_and_interrupts_the_task_once_redis_is_back(
    redis_url: str, redis_proxy: tuple[TcpProxy, str]
):
    proxy, proxied = redis_proxy
    app = App("cancel-outage", broker="memory://", backend=proxied)
    direct = RedisBackend(redis_url, app.config)
    started, stopped = threading.Event(), threading.Event()

    @app.task(name="outage.loop", retry=2)
    def loop() -> None:
        started.set()
        try:
            for _ in range(LONG):
                time.sleep(0.01)
        finally:
            stopped.set()

    backend = app.backend
    assert isinstance(backend, RedisBackend)
    backend.buffer.retry_seconds = 0.1
    result = loop.delay()
    worker = app.start_background(concurrency=1)
    try:
        assert started.wait(30)
        watch = worker._executor.cancels  # type: ignore[union-attr]
        proxy.kill()  # the worker loses Redis while the task runs
        assert direct.cancel(result.id) is Status.IN_PROGRESS  # an operator's process still reaches it
        failed_before = watch.poll_errors
        wait_until(lambda: watch.poll_errors > failed_before, what="a poll to fail during the outage")
        assert not stopped.is_set()  # nothing told the worker yet: the task runs on
        proxy.start()
        assert stopped.wait(15), "the task was not interrupted once Redis was back"
        with pytest.raises(TaskCancelled):
            result.get(timeout=30)
    finally:
        if not proxy._running.is_set():
            proxy.start()
        worker.stop()
        app.close()
    record = direct.get(result.id)
    assert record is not None and record.status is Status.CANCELLED and record.retry == 2
    direct.close()


def test_a_cancel_while_redis_is_away_raises_and_changes_nothing(redis_url: str, redis_proxy: tuple[TcpProxy, str]):
    proxy, proxied = redis_proxy
    app = App("cancel-outage", broker="memory://", backend=proxied)
    direct = RedisBackend(redis_url, app.config)

    @app.task(name="outage.noop")
    def noop() -> None:
        return None

    try:
        result = noop.delay()
        assert isinstance(app.backend, RedisBackend)
        app.backend.buffer.retry_seconds = 0.1
        proxy.kill()
        with pytest.raises(BackendUnavailable):
            result.cancel()
        assert direct.get(result.id).status in (Status.INITIATED, Status.QUEUED)  # type: ignore[union-attr]
    finally:
        if not proxy._running.is_set():
            proxy.start()
        app.close()
        direct.close()
