"""Cancel on the embedded default (memory:// broker and backend, a worker in threads): the Python API,
before a task starts, while it runs (sync, async, cooperative), waiting for a retry, and workflows.
The fleet, RabbitMQ and Redis versions are in test_cancel_fleet.py."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest

from cogman import (
    App,
    NotCancellable,
    Status,
    TaskCancelled,
    TaskContext,
    TaskFailed,
    TaskNotFound,
    chain,
    chord,
    group,
)
from tests.integration.test_worker_memory import wait_until

LONG = 3000  #: loop rounds of 10 ms: 30 s, far past any wait of these tests


def test_a_task_cancelled_before_any_worker_runs_reads_cancelled_and_never_runs(app: App):
    ran: list[int] = []

    @app.task(name="cancel.record")
    def record_run(x: int) -> None:
        ran.append(x)

    doomed, kept = record_run.delay(1), record_run.delay(2)
    assert doomed.cancel() is True
    assert doomed.status is Status.CANCELLED and doomed.state == "REVOKED" and doomed.ready()
    assert isinstance(doomed.result, TaskCancelled)
    assert doomed.cancel() is False  # nothing left to cancel: says so
    assert app.cancel(doomed.id) is False
    worker = app.start_background(concurrency=1)
    try:
        assert kept.get(timeout=10) is None
        app.join(timeout=10)
    finally:
        worker.stop()
    assert ran == [2]
    with pytest.raises(TaskCancelled, match=f"task {doomed.id} was cancelled"):
        doomed.get(timeout=1)


def test_cancelling_a_finished_task_changes_nothing(app: App):
    @app.task(name="cancel.add")
    def add(a: int, b: int) -> int:
        return a + b

    worker = app.start_background(concurrency=1)
    try:
        result = add.delay(1, 2)
        assert result.get(timeout=10) == 3
    finally:
        worker.stop()
    assert result.cancel() is False
    assert result.status is Status.SUCCESS and result.get(timeout=1) == 3
    with pytest.raises(TaskNotFound):
        app.cancel("no-such-task")


def test_a_go_format_task_is_refused_clearly(app: App):
    @app.task(name="cancel.go", wire="go")
    def go_task(payload: bytes) -> None:
        return None

    result = go_task.delay(b"{}")
    with pytest.raises(NotCancellable, match="Go-format task"):
        result.cancel()


def test_a_running_sync_task_is_interrupted_recorded_cancelled_and_not_retried(app: App):
    started, stopped, after_loop = threading.Event(), threading.Event(), threading.Event()

    @app.task(name="cancel.loop", retry=3)
    def loop() -> None:
        started.set()
        try:
            for _ in range(LONG):
                time.sleep(0.01)
            after_loop.set()
        finally:
            stopped.set()

    worker = app.start_background(concurrency=2)
    try:
        result = loop.delay()
        assert started.wait(10)
        assert result.cancel() is True
        assert stopped.wait(10), "the handler was not interrupted"
        assert not after_loop.is_set()
        with pytest.raises(TaskCancelled):
            result.get(timeout=10)
        app.join(timeout=10)
    finally:
        worker.stop()
    record = result.record()
    assert record.status is Status.CANCELLED and record.retry == 3 and record.latest_attempt_id in (None, result.id)
    assert [status for status, _ in record.history][-1] is Status.CANCELLED


def test_a_running_async_task_is_cancelled_at_its_next_await(app: App):
    started, stopped, after_loop = threading.Event(), threading.Event(), threading.Event()

    @app.task(name="cancel.async_loop", retry=3)
    async def async_loop() -> None:
        started.set()
        try:
            for _ in range(LONG):
                await asyncio.sleep(0.01)
            after_loop.set()
        finally:
            stopped.set()

    worker = app.start_background(concurrency=2)
    try:
        result = async_loop.delay()
        assert started.wait(10)
        assert result.cancel() is True
        assert stopped.wait(10), "the coroutine was not cancelled"
        assert not after_loop.is_set()
        with pytest.raises(TaskCancelled):
            result.get(timeout=10)
    finally:
        worker.stop()
    assert result.record().status is Status.CANCELLED and result.record().latest_attempt_id in (None, result.id)


def test_ctx_cancelled_lets_a_loop_that_swallows_the_interrupt_stop(app: App):
    started, saw = threading.Event(), threading.Event()

    @app.task(name="cancel.cooperative", bind=True)
    def cooperative(ctx: TaskContext) -> str:
        started.set()
        while not ctx.cancelled:
            with contextlib.suppress(BaseException):  # swallows the interrupt: only the flag stops the loop
                time.sleep(0.01)
        saw.set()
        return "partial"

    worker = app.start_background(concurrency=1)
    try:
        result = cooperative.delay()
        assert started.wait(10)
        result.cancel()
        assert saw.wait(10)
        with pytest.raises(TaskCancelled):
            result.get(timeout=10)
    finally:
        worker.stop()
    assert result.record().result is None  # its return value is dropped


def test_a_task_waiting_for_its_retry_is_cancelled_and_no_attempt_follows(app: App):
    runs: list[int] = []
    failed_once = threading.Event()

    @app.task(name="cancel.flaky", retry=5, retry_backoff=3600)
    def flaky() -> None:
        runs.append(1)
        failed_once.set()
        raise RuntimeError("down")

    worker = app.start_background(concurrency=1)
    try:
        result = flaky.delay()
        assert failed_once.wait(10)
        wait_until(lambda: result.latest().attempt == 2)  # the retry attempt, recorded before the ack
        assert result.cancel() is True
        with pytest.raises(TaskCancelled):
            result.get(timeout=10)
    finally:
        worker.stop()
    latest = result.latest()
    assert latest.attempt == 2 and latest.status is Status.CANCELLED
    assert result.record().retry == 4 and runs == [1]


def test_cancelling_a_chain_cancels_the_running_step_and_every_later_one(app: App):
    started, stopped = threading.Event(), threading.Event()
    ran: list[str] = []

    @app.task(name="cancel.slow")
    def slow(x: int) -> int:
        started.set()
        try:
            for _ in range(LONG):
                time.sleep(0.01)
            return x
        finally:
            stopped.set()

    @app.task(name="cancel.step")
    def step(x: int) -> int:
        ran.append("step")
        return x

    worker = app.start_background(concurrency=2)
    try:
        handle = chain(slow.s(1), step.s(), step.s()).delay()
        assert started.wait(10)
        assert handle.cancel() is True
        assert stopped.wait(10)
        with pytest.raises(TaskCancelled):
            handle.get(timeout=10)
        app.join(timeout=10)
    finally:
        worker.stop()
    assert ran == []
    assert [app.result(i).status for i in handle.ids] == [Status.CANCELLED] * 3
    assert handle.cancel() is False


def test_cancelling_a_chord_cancels_its_members_and_its_callback_never_runs(app: App):
    started = threading.Semaphore(0)
    ran: list[str] = []

    @app.task(name="cancel.member")
    def member(x: int) -> int:
        started.release()
        for _ in range(LONG):
            time.sleep(0.01)
        return x

    @app.task(name="cancel.total")
    def total(values: list[int]) -> int:
        ran.append("callback")
        return sum(values)

    worker = app.start_background(concurrency=2)
    try:
        handle = chord(group(member.s(i) for i in range(3)), total.s()).delay()
        assert started.acquire(timeout=10)
        assert handle.cancel() is True
        with pytest.raises(TaskCancelled):
            handle.get(timeout=10)
        app.join(timeout=15)
    finally:
        worker.stop()
    assert ran == []
    assert app.result(handle.id).status is Status.CANCELLED
    assert {r.status for r in handle.group.results} == {Status.CANCELLED}


def test_cancelling_a_group_before_it_runs(app: App):
    ran: list[int] = []

    @app.task(name="cancel.each")
    def each(x: int) -> None:
        ran.append(x)

    handle = group(each.s(i) for i in range(4)).delay()
    assert handle.cancel() is True
    worker = app.start_background(concurrency=2)
    try:
        app.join(timeout=10)
    finally:
        worker.stop()
    assert ran == []
    with pytest.raises(TaskCancelled):
        handle.get(timeout=1)


def test_task_cancelled_is_a_task_failed():
    assert issubclass(TaskCancelled, TaskFailed)


def test_bulk_cancel_takes_the_matching_tasks_at_most_limit_at_a_time(app: App):
    from cogman.admin.cancel import cancel_matching

    @app.task(name="cancel.bulk")
    def bulk(x: int) -> None:
        return None

    @app.task(name="cancel.other")
    def other(x: int) -> None:
        return None

    mine = [bulk.delay(i) for i in range(5)]
    theirs = other.delay(0)
    first = cancel_matching(app.backend, name="cancel.bulk", status=Status.QUEUED, limit=3)
    assert len(first.cancelled) == 3 and first.more
    second = cancel_matching(app.backend, name="cancel.bulk", status=Status.QUEUED, limit=3)
    assert len(second.cancelled) == 2 and not second.more
    assert sorted(first.cancelled + second.cancelled) == sorted(r.id for r in mine)
    assert theirs.status is Status.QUEUED
    everything = cancel_matching(app.backend)
    assert everything.cancelled == [theirs.id] and not everything.more
    with pytest.raises(ValueError, match="final"):
        cancel_matching(app.backend, status=Status.SUCCESS)
