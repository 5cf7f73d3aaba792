"""Retry backoff, ``retry_for``, ``Retry(countdown=)`` and time limits through a real worker on RabbitMQ,
with Redis records. The times between attempts are read from the records: a retry's planned start
(``eta``) is at least its backoff after the failed attempt started (exact), and it starts no earlier
than planned (exact), nor much later (``LATE``, loose)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import tenacity

from cogman import App, Retry, Status, TaskContext, TaskFailed
from tests.integration.scheduling_helpers import LATE, attempts, reached


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_backoff_schedule_follows_the_strategy(scheduled_app: Callable[..., App]):
    app = scheduled_app()
    strategy = tenacity.wait_exponential(multiplier=1, max=4)

    @app.task(name="retries.always_fails", retry=3, retry_backoff=strategy)
    def always_fails() -> None:
        raise ConnectionError("still down")

    app.start_background(concurrency=2)
    result = always_fails.delay()
    with pytest.raises(TaskFailed, match="after 4 attempts: ConnectionError: still down"):
        result.get(timeout=60)

    chain = attempts(app, result.id)
    assert [a.attempt for a in chain] == [1, 2, 3, 4] and chain[0].eta is None
    for failed, retry, backoff in zip(chain[:-1], chain[1:], (1, 2, 4), strict=True):
        began, started = reached(failed, Status.IN_PROGRESS), reached(retry, Status.IN_PROGRESS)
        assert retry.eta is not None and retry.eta - began >= timedelta(seconds=backoff)
        assert retry.eta <= started <= retry.eta + timedelta(seconds=LATE)
        assert started - began <= timedelta(seconds=backoff + LATE)


def test_retry_for_retries_only_the_listed_exceptions(scheduled_app: Callable[..., App]):
    app = scheduled_app()

    @app.task(name="retries.picky", retry=3, retry_for=(ConnectionError,), bind=True)
    def picky(ctx: TaskContext, kind: str) -> int:
        if kind == "value":
            raise ValueError("bad input is not worth a retry")
        if ctx.attempt < 3:
            raise ConnectionResetError("flaky network")
        return ctx.attempt

    app.start_background(concurrency=2)
    bad, flaky = picky.delay("value"), picky.delay("network")
    with pytest.raises(TaskFailed, match="ValueError: bad input") as raised:
        bad.get(timeout=30)
    assert raised.value.attempts == 1
    assert [a.attempt for a in attempts(app, bad.id)] == [1] and bad.record().retry == 3  # budget untouched
    assert flaky.get(timeout=30) == 3
    assert flaky.record().retry == 1


def test_retry_asked_from_a_task(scheduled_app: Callable[..., App]):
    app = scheduled_app()

    @app.task(name="retries.asks", retry=1, bind=True)
    def asks(ctx: TaskContext) -> int:
        if ctx.attempt == 1:
            raise Retry(countdown=2, reason="rate limited")
        return ctx.attempt

    @app.task(name="retries.asks_without_budget")
    def asks_without_budget() -> None:
        raise Retry(countdown=1)

    app.start_background(concurrency=2)
    result = asks.delay()
    assert result.get(timeout=30) == 2
    first, second = attempts(app, result.id)
    assert first.fail_error == "Retry: retry asked for in 2 s: rate limited"
    assert second.eta is not None and second.eta - reached(first, Status.IN_PROGRESS) >= timedelta(seconds=2)
    assert reached(second, Status.IN_PROGRESS) >= second.eta

    with pytest.raises(TaskFailed, match="retry asked for in 1 s, but no retry is left"):
        asks_without_budget.delay().get(timeout=30)


def test_a_sync_attempt_over_its_time_limit_fails_and_is_retried(scheduled_app: Callable[..., App]):
    app = scheduled_app()

    @app.task(name="retries.slow_then_quick", retry=1, time_limit=0.5, bind=True)
    def slow_then_quick(ctx: TaskContext) -> int:
        if ctx.attempt == 1:
            spin(60)  # pure Python: interrupted at the limit
        return ctx.attempt

    @app.task(name="retries.always_slow", retry=1, time_limit=0.5)
    def always_slow() -> None:
        spin(60)

    worker = app.start_background(concurrency=2)
    result = slow_then_quick.delay()
    assert result.get(timeout=30) == 2
    first = attempts(app, result.id)[0]
    assert first.status is Status.FAILED and first.fail_error == "TimeLimitExceeded: time limit exceeded (0.5 s)"
    assert first.duration is not None and 0.5 <= first.duration < 60

    with pytest.raises(TaskFailed, match=r"after 2 attempts: TimeLimitExceeded: time limit exceeded \(0.5 s\)"):
        always_slow.delay().get(timeout=30)
    assert worker.is_running and worker.outcomes  # the handler threads live on


def test_an_async_attempt_over_its_time_limit_is_cancelled_and_retried(scheduled_app: Callable[..., App]):
    app = scheduled_app()
    cancelled: list[int] = []

    @app.task(name="retries.async_slow_then_quick", retry=1, time_limit=0.5, bind=True)
    async def async_slow_then_quick(ctx: TaskContext) -> int:
        if ctx.attempt == 1:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(ctx.attempt)
                raise
        return ctx.attempt

    app.start_background(concurrency=2)
    result = async_slow_then_quick.delay()
    assert result.get(timeout=30) == 2
    first = attempts(app, result.id)[0]
    assert first.fail_error == "TimeLimitExceeded: time limit exceeded (0.5 s)" and cancelled == [1]
