"""Issue 7, the worker's side: what a worker does when a handler, the backend or a message misbehaves.

Each test names the path it closes; each fails against the worker before the change.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from cogman import App, Config, Status, TaskContext, TaskFailed
from cogman.backends.redis.backend import RedisBackend
from cogman.brokers.held import HeldDeliveries
from cogman.brokers.memory import MemoryBroker, MemoryConsumer
from cogman.message import Message
from cogman.priority import Priority
from cogman.worker.worker import Worker
from tests.integration.rabbit_helpers import figures
from tests.integration.tcp_proxy import TcpProxy


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "a condition") -> None:
    """For state the test cannot be notified of (another component's counters)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def unacked(worker: Worker) -> int:
    assert isinstance(worker._consumer, HeldDeliveries)
    consumer = worker._consumer.consumer
    assert isinstance(consumer, MemoryConsumer)
    with consumer._lock:
        return len(consumer._unacked)


# Item 7: a handler raising BaseException fails its attempt; the thread lives on


@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt, GeneratorExit])
def test_a_handler_raising_base_exception_fails_the_attempt_and_the_threads_live_on(app: App, kind: type):
    @app.task(name="exits")
    def exits(code: int) -> None:
        raise kind(code)

    @app.task(name="async.exits")
    async def async_exits(code: int) -> None:
        await asyncio.sleep(0)
        raise kind(code)

    @app.task(name="fine")
    def fine(n: int) -> int:
        return n

    worker = app.start_background(concurrency=2)
    try:
        failing = [exits.delay(i) for i in range(4)] + [async_exits.delay(i) for i in range(4)]
        for result in failing:  # more than `concurrency` of them: the old worker lost a thread per task
            with pytest.raises(TaskFailed) as caught:
                result.get(timeout=10)
            assert caught.value.error is not None and caught.value.error.startswith(kind.__name__)
        assert [fine.delay(i).get(timeout=10) for i in range(4)] == [0, 1, 2, 3]
        assert all(thread.is_alive() for thread in worker._threads)
        figures(f"handler raising {kind.__name__}", sent=12, succeeded=4, failed_as_promised=8, lost=0, ran_twice=0,
                dead_lettered=0, handler_threads_alive=len(worker._threads))  # fmt: skip
    finally:
        worker.stop()


# Item 9: one overall grace deadline; consumers cancelled first


def test_stop_has_one_grace_deadline_for_all_handlers_and_takes_nothing_new():
    app = App("stop", broker="memory://", backend="memory://", grace_period=0.3)
    release = threading.Event()
    started = threading.Semaphore(0)

    @app.task(name="stuck")
    def stuck(index: int) -> int:
        started.release()
        release.wait(60)
        return index

    worker = app.start_background(concurrency=4)
    waits: list[float | None] = []
    for thread in worker._threads:
        original = thread.join

        def recording_join(timeout: float | None = None, _original: Callable[..., None] = original) -> None:
            waits.append(timeout)
            _original(timeout)

        thread.join = recording_join  # type: ignore[method-assign]
    try:
        [stuck.delay(i) for i in range(4)]
        for _ in range(4):
            assert started.acquire(timeout=10)
        stopper = threading.Thread(target=worker.stop)
        stopper.start()
        wait_until(lambda: len(waits) >= 1, what="stop to start waiting for the handlers")
        late = stuck.delay(99)  # sent while stopping: the cancelled consumer never takes it
        stopper.join(30)
        assert not stopper.is_alive()
        assert len(waits) == 4 and sum(w or 0 for w in waits) <= 0.3 + 1e-6  # one deadline, not 4 x 0.3 s
        broker = app.broker
        assert isinstance(broker, MemoryBroker)
        assert broker.depth() >= 1 and late.status is Status.QUEUED
        figures("stop with 4 stuck handlers (grace 0.3 s)", sent=5, succeeded=0, lost=0, ran_twice=0, dead_lettered=0,
                grace_waited_s=round(sum(w or 0 for w in waits), 3), back_in_queue=broker.depth())  # fmt: skip
    finally:
        release.set()
        app.close()


# Item 17: a retry attempt shows in_progress while it runs; item 18: the chain comes from the backend


def test_a_retry_attempt_shows_in_progress_and_reads_its_chain_from_the_backend(app: App):
    seen: list[tuple[Status, str, int, int]] = []

    @app.task(name="flaky", retry=2, bind=True)
    def flaky(ctx: TaskContext) -> str:
        status = app.backend.get(ctx.task_id).status  # type: ignore[union-attr]
        seen.append((status, ctx.original_task_id, ctx.attempt, ctx.retries_left))
        if ctx.attempt < 3:
            raise OSError("not yet")
        return "done"

    worker = app.start_background(concurrency=1)
    try:
        result = flaky.delay()
        assert result.get(timeout=10) == "done"
        assert seen == [
            (Status.IN_PROGRESS, result.id, 1, 2),
            (Status.IN_PROGRESS, result.id, 2, 1),
            (Status.IN_PROGRESS, result.id, 3, 0),
        ]
    finally:
        worker.stop()


def test_a_forged_message_cannot_redirect_another_chain(app: App):
    """Anyone who can publish may send a body naming another task's chain; the worker ignores it."""
    runs: list[str] = []

    @app.task(name="victim", retry=3)
    def victim(n: int) -> int:
        runs.append("victim")
        if n < 0:
            raise ValueError("always")
        return n

    worker = app.start_background(concurrency=1)
    try:
        honest = victim.delay(1)
        assert honest.get(timeout=10) == 1
        forged = Message(
            task_id=str(uuid.uuid4()),
            name="victim",
            original_task_id=honest.id,  # the lie: "I am an attempt of that chain"
            priority=Priority.HIGH,
            args=(-1,),
            attempt=2,
            retries_left=9,
        )
        broker = app.broker
        assert isinstance(broker, MemoryBroker)
        broker.put(forged.encode(), forged.headers, Priority.HIGH)
        wait_until(lambda: worker.outcomes["failed"] == 1, what="the forged message to fail")
        original = app.backend.get(honest.id)
        assert original is not None and original.retry == 3 and original.latest_attempt_id is None
        assert honest.get(timeout=10) == 1 and runs == ["victim", "victim"]
    finally:
        worker.stop()


# Item 13: a message is acked only once its outcome is in the backend


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of the shared Redis: killing it is a Redis outage for this test only."""
    proxy = TcpProxy(6379)
    proxy.start()
    db = redis_url.rsplit("/", 1)[-1]
    redis.Redis.from_url(redis_url).flushdb()
    try:
        yield proxy, f"redis://127.0.0.1:{proxy.port}/{db}"
    finally:
        proxy.kill()


def test_outcomes_parked_during_a_redis_outage_hold_their_acks(redis_url: str, redis_proxy: tuple[TcpProxy, str]):
    proxy, proxied = redis_proxy
    app = App("held", broker="memory://", backend=proxied, prefetch=3)
    direct = RedisBackend(redis_url, app.config)

    @app.task(name="held.work")
    def work(index: int) -> int:
        return index * 2

    results = [work.delay(i) for i in range(10)]
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    backend.buffer.retry_seconds = 0.1
    proxy.kill()  # Redis is away for the worker from now on
    worker = app.start_background(concurrency=2)
    try:
        wait_until(lambda: worker._executor is not None and worker._executor.held >= 3, what="three held acks")
        assert unacked(worker) >= 3  # ran, outcome parked in memory: not acked
        assert worker._executor.held <= 3 + 2  # stops fetching once it holds `prefetch` of them
        assert all(direct.get(r.id).status is Status.QUEUED for r in results)  # type: ignore[union-attr]
        held = worker._executor.held
        proxy.start()  # Redis is back: the parked outcomes land, then the acks go
        back = time.monotonic()
        assert [r.get(timeout=30) for r in results] == [i * 2 for i in range(10)]
        wait_until(lambda: unacked(worker) == 0 and worker._executor.held == 0, what="every ack")  # type: ignore[union-attr]
        figures("Redis outage: outcomes held unacked", sent=10, succeeded=10, lost=0, ran_twice=0, dead_lettered=0,
                acks_held_at_most=held, recover_s=round(time.monotonic() - back, 2))  # fmt: skip
    finally:
        if not proxy._running.is_set():
            proxy.start()
        worker.stop()
        app.close()
        direct.close()


def test_a_failure_during_a_redis_outage_waits_for_redis_and_loses_no_retry(
    redis_url: str, redis_proxy: tuple[TcpProxy, str], caplog: pytest.LogCaptureFixture
):
    """spawn_retry cannot be parked (it decides the budget): the worker waits for Redis instead of
    requeueing the message in a loop, and the chain goes on once Redis is back."""
    proxy, proxied = redis_proxy
    app = App("waits", broker="memory://", backend=proxied)
    attempts: list[int] = []

    @app.task(name="waits.flaky", retry=1, bind=True)
    def flaky(ctx: TaskContext) -> int:
        attempts.append(ctx.attempt)
        if len(attempts) == 1:
            proxy.kill()  # Redis goes away while the first attempt runs
            raise OSError("first attempt fails")
        return ctx.attempt

    backend = app.backend
    assert isinstance(backend, RedisBackend)
    backend.buffer.retry_seconds = 0.1
    result = flaky.delay()
    worker = app.start_background(concurrency=1)
    try:
        wait_until(lambda: caplog.text.count("cannot spawn a retry") >= 2, what="the worker to wait for Redis twice")
        assert worker.outcomes["requeued"] == 0 and unacked(worker) == 1  # waited, not requeued in a loop
        proxy.start()
        back = time.monotonic()
        assert result.get(timeout=30) == 2 and attempts == [1, 2]
        figures("failure during a Redis outage: retry spawned once Redis is back", sent=1, succeeded=1, lost=0,
                ran_twice=0, dead_lettered=0, requeued=0, recover_s=round(time.monotonic() - back, 2))  # fmt: skip
        direct = RedisBackend(redis_url, app.config)
        assert direct.get(result.id).status is Status.FAILED  # type: ignore[union-attr]
        direct.close()
    finally:
        if not proxy._running.is_set():
            proxy.start()
        worker.stop()
        app.close()


def test_config_validates_the_new_reliability_options():
    for option, value in (("max_message_size", 0), ("outbox_limit", 0), ("max_redeliveries", -1)):
        with pytest.raises(ValueError, match=option):
            Config(**{option: value})
