"""Issue 8: the task log is the commit point. ``.delay()`` returns once the record is written and the
message handed to the publisher (``send_mode="recorded"``); confirms are read in the background and the
``queued`` writes of a confirm batch go in one backend call. ``send_mode="confirmed"`` (or
``wait_confirmed=True``) keeps the old wait, and a send whose record could not be written waits for the
confirm whatever the mode.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis

from cogman import App, Status
from cogman.backends.redis.backend import RedisBackend
from tests.integration.rabbit_helpers import wait_for
from tests.integration.tcp_proxy import TcpProxy


@pytest.fixture
def broker_proxy(rabbit: str) -> Iterator[tuple[TcpProxy, str]]:
    proxy = TcpProxy(5672)
    proxy.start()
    try:
        yield proxy, proxy.url(rabbit)
    finally:
        proxy.thaw()
        proxy.kill()


def test_recorded_mode_returns_before_the_confirm_and_the_confirm_comes_later(
    broker_proxy: tuple[TcpProxy, str], rabbit_app: Callable[..., App]
):
    proxy, url = broker_proxy
    app = rabbit_app(broker=url)
    warm = app.send_task("modes.noop", wait_confirmed=True)  # connects and declares first
    assert warm.wait_sent(0) and warm.status is Status.QUEUED
    proxy.freeze()  # bytes go nowhere: no confirm can come back
    result = app.send_task("modes.noop", args=(1,))
    assert result.status is Status.INITIATED  # recorded, handed over, not confirmed
    assert not result.wait_sent(0.2)
    proxy.thaw()
    assert result.wait_sent(30)
    assert result.status is Status.QUEUED  # a settled receipt means the queued write is done


def test_a_recorded_send_publishes_while_redis_runs_the_create(rabbit_app: Callable[..., App], redis_url: str):
    """The create is written, the message published, and only then the create's reply read; a confirmed
    send keeps the old order (the record is in Redis before the message leaves)."""
    app = rabbit_app(backend=redis_url)
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    app.send_task("modes.noop", wait_confirmed=True)  # connects and declares first
    events: list[str] = []
    real_send, real_publish = backend._scripts.send, app.broker.publish

    def send(script: Any, args: list[Any]) -> Callable[[], Any]:
        reply = real_send(script, args)
        events.append("create written")
        return lambda: events.append("reply read") or reply()

    def publish(messages: Sequence[Any], *, wait: bool = True) -> Any:
        events.append(f"published, wait={wait}")
        return real_publish(messages, wait=wait)

    backend._scripts.send = send  # type: ignore[method-assign]
    app.broker.publish = publish  # type: ignore[method-assign]
    result = app.send_task("modes.noop", args=(1,))
    assert events == ["create written", "published, wait=False", "reply read"]
    assert result.wait_sent(30) and result.status is Status.QUEUED
    events.clear()
    app.send_task("modes.noop", args=(2,), wait_confirmed=True)
    assert events == ["published, wait=True"]  # the create went first, on the plain path


def test_confirmed_mode_and_wait_confirmed_return_after_the_confirm(rabbit_app: Callable[..., App]):
    app = rabbit_app(send_mode="confirmed")
    result = app.send_task("modes.noop")
    assert result.wait_sent(0) and result.status is Status.QUEUED
    other = rabbit_app(name="other")
    chosen = other.send_task("modes.noop", wait_confirmed=True)
    assert chosen.wait_sent(0) and chosen.status is Status.QUEUED


def test_queued_writes_go_in_one_call_per_confirm_batch(
    broker_proxy: tuple[TcpProxy, str], rabbit_app: Callable[..., App]
):
    proxy, url = broker_proxy
    app = rabbit_app(broker=url)
    app.send_task("modes.noop", wait_confirmed=True)
    calls: list[int] = []
    backend = app.backend
    original = backend.transition_many

    def counting(task_ids: Sequence[str], status: Status) -> None:
        calls.append(len(task_ids))
        original(task_ids, status)

    backend.transition_many = counting  # type: ignore[method-assign]
    proxy.freeze()
    results = [app.send_task("modes.noop", args=(i,)) for i in range(200)]
    proxy.thaw()  # the 200 confirms arrive together
    for result in results:
        assert result.wait_sent(30)
    assert sum(calls) == 200
    assert len(calls) < 20  # batches, not one write per message


def test_a_send_whose_record_is_parked_waits_for_the_confirm(rabbit_app: Callable[..., App], redis_url: str):
    """While the backend is away the broker is what keeps the task: the send waits for its confirm."""
    redis_proxy = TcpProxy(6379)
    redis_proxy.start()
    db = redis_url.rsplit("/", 1)[-1]
    app = rabbit_app(backend=f"redis://127.0.0.1:{redis_proxy.port}/{db}")
    try:
        backend = app.backend
        assert isinstance(backend, RedisBackend)
        backend.buffer.retry_seconds = 0.1
        app.send_task("modes.noop", wait_confirmed=True)
        redis_proxy.kill()
        result = app.send_task("modes.noop", args=(1,))  # recorded mode, but the record is parked
        assert result.wait_sent(0)  # delay() already waited for RabbitMQ's confirm
        redis_proxy.start()
        assert backend.flush(30)
        direct = redis.Redis.from_url(redis_url)
        wait_for(lambda: result.status is Status.QUEUED, 30, "the parked record and its queued write to land")
        direct.close()
    finally:
        if not redis_proxy._running.is_set():
            redis_proxy.start()
        redis_proxy.kill()


def test_tasks_sent_without_waiting_all_run(rabbit_app: Callable[..., App]):
    app = rabbit_app()
    done: list[int] = []
    lock = threading.Lock()

    @app.task(name="modes.collect")
    def collect(index: int) -> int:
        with lock:
            done.append(index)
        return index

    worker = app.start_background(concurrency=4)
    try:
        results = [collect.delay(i) for i in range(300)]
        assert [r.get(timeout=60) for r in results] == list(range(300))
        assert sorted(done) == list(range(300))
    finally:
        worker.stop()
