"""Retry control and time limits without services: the decisions of cogman/backoff.py, the task options
checked at decoration, and what cogman/worker/limits.py can and cannot interrupt. The same behaviour through a
real worker on RabbitMQ and Redis is in tests/integration/test_retry_control_rabbitmq.py."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import tenacity

from cogman import App, Retry, TimeLimitExceeded
from cogman.backoff import RetryPolicy, decide
from cogman.delays import MAX_DELAY
from cogman.worker.limits import bounded, call

# Decisions


def test_a_constant_backoff_delays_every_retry_alike():
    policy = RetryPolicy.build("t", 2.5)
    assert [decide(policy, ValueError(), n).countdown for n in (1, 2, 3)] == [2.5, 2.5, 2.5]
    assert decide(RetryPolicy.build("t"), ValueError(), 1).countdown == 0.0


def test_a_tenacity_strategy_sees_the_failed_attempt_number_and_exception():
    exponential = RetryPolicy.build("t", tenacity.wait_exponential(multiplier=1, max=60))
    assert [decide(exponential, OSError(), n).countdown for n in (1, 2, 3, 4, 8)] == [1, 2, 4, 8, 60]
    jitter = RetryPolicy.build("t", tenacity.wait_random_exponential(multiplier=1, max=30))
    for attempt in range(1, 8):
        assert 0 <= decide(jitter, OSError(), attempt).countdown <= min(30, 2 ** (attempt - 1))
    seen: list[tuple[int, BaseException | None]] = []

    def strategy(state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None
        seen.append((state.attempt_number, state.outcome.exception()))
        return 7

    error = ConnectionError("down")
    assert decide(RetryPolicy.build("t", strategy), error, 3).countdown == 7
    assert seen == [(3, error)]


def test_a_strategy_that_fails_retries_at_once_and_a_huge_one_is_capped(caplog: pytest.LogCaptureFixture):
    def broken(state: tenacity.RetryCallState) -> float:
        raise RuntimeError("bug in the strategy")

    assert decide(RetryPolicy.build("t", broken), ValueError(), 1) == decide(RetryPolicy.build("t"), ValueError(), 1)
    assert "bug in the strategy" in caplog.text
    assert decide(RetryPolicy.build("t", lambda state: -1.0), ValueError(), 1).countdown == 0.0
    assert decide(RetryPolicy.build("t", lambda state: 1e12), ValueError(), 1).countdown == MAX_DELAY


def test_retry_for_retries_only_the_listed_exceptions():
    policy = RetryPolicy.build("t", 5, (ConnectionError, TimeoutError))
    assert decide(policy, ConnectionResetError(), 1).retry  # a subclass counts
    assert decide(policy, TimeoutError(), 1).retry
    refused = decide(policy, ValueError("bad input"), 1)
    assert not refused.retry and refused.why_not == "ValueError is not in retry_for (ConnectionError, TimeoutError)"
    assert RetryPolicy.build("t", retry_for=KeyError).retry_for == (KeyError,)


def test_retry_asked_from_a_task_wins_over_retry_for_and_the_backoff():
    policy = RetryPolicy.build("t", 30, (ConnectionError,))
    assert decide(policy, Retry(countdown=2), 1).countdown == 2
    assert decide(policy, Retry(), 1).countdown == 30
    assert str(Retry(countdown=2, reason="rate limited")) == "retry asked for in 2 s: rate limited"
    with pytest.raises(ValueError, match="-1"):
        Retry(countdown=-1)


# Options checked when the task is declared


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"retry_backoff": -1}, ValueError, "retry_backoff must be a finite number of seconds >= 0, got -1"),
        ({"retry_backoff": "1s"}, TypeError, "'1s'"),
        ({"retry_backoff": float("nan")}, ValueError, "nan"),
        ({"retry_for": (ValueError, "KeyError")}, TypeError, "retry_for must be a tuple of exception classes"),
        ({"retry_for": [ValueError]}, TypeError, "retry_for"),
        ({"retry_for": (int,)}, TypeError, "retry_for"),
        ({"time_limit": 0}, ValueError, "time_limit must be a finite number of seconds > 0, got 0"),
        ({"time_limit": -5}, ValueError, "-5"),
        ({"time_limit": "30"}, TypeError, "'30'"),
    ],
)
def test_bad_task_options_are_refused_at_decoration(app: App, options: dict[str, Any], error: type, named: str):
    with pytest.raises(error) as raised:

        @app.task(name="options.bad", **options)
        def bad() -> None:
            return None

    assert "'options.bad'" in str(raised.value) and named in str(raised.value)
    assert "options.bad" not in app.tasks


def test_good_task_options_are_kept(app: App):
    @app.task(name="options.good", retry=3, retry_backoff=2, retry_for=(OSError,), time_limit=1.5)
    def good() -> None:
        return None

    assert good.retry_policy == RetryPolicy(2.0, (OSError,)) and good.time_limit == 1.5


# What a time limit interrupts


def spin(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "spun"


def test_a_pure_python_loop_is_interrupted_at_the_limit():
    began = time.monotonic()
    with pytest.raises(TimeLimitExceeded, match=r"time limit exceeded \(0.3 s\)"):
        call(0.3, spin, 30)
    assert time.monotonic() - began < 30  # interrupted, not run to its end


def test_a_blocking_c_call_runs_to_its_end_then_the_attempt_fails():
    """``time.sleep`` cannot be interrupted: the exception comes when it returns."""
    finished: list[str] = []

    def sleeper() -> None:
        time.sleep(0.6)
        finished.append("slept")  # never reached: the interrupt is raised on return from sleep

    began = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        call(0.1, sleeper)
    assert time.monotonic() - began >= 0.6 and finished == []


def test_a_handler_that_swallows_the_interrupt_still_fails():
    def stubborn() -> str:
        try:
            spin(30)
        except BaseException:
            print("swallowed")
        return "pretended to finish"

    with pytest.raises(TimeLimitExceeded):
        call(0.2, stubborn)


def test_except_exception_does_not_catch_it_and_finally_blocks_run():
    cleaned: list[str] = []

    def careful() -> None:
        try:
            spin(30)
        except Exception:  # a time limit is not an Exception inside the handler
            cleaned.append("caught")
        finally:
            cleaned.append("cleaned up")

    with pytest.raises(TimeLimitExceeded):
        call(0.2, careful)
    assert cleaned == ["cleaned up"]


def test_no_interrupt_escapes_a_call_that_finished_in_time():
    """Calls finishing right at their limit, many times: nothing is raised after ``call`` returned or
    failed, so the code recording the outcome is never hit."""
    outcomes = []
    for index in range(1000):  # limits from 0.05 ms to 1 ms around a 0.5 ms call: every interleaving
        try:
            outcomes.append(call(0.00005 * (index % 20 + 1), spin, 0.0005))
        except TimeLimitExceeded:
            outcomes.append("limit")
    after = spin(0.3)  # a stray async exception would be raised in here
    assert after == "spun" and set(outcomes) <= {"spun", "limit"}


def test_limits_of_concurrent_threads_hit_only_their_own_thread():
    results: dict[str, str] = {}

    def run(name: str, limit: float, seconds: float) -> None:
        try:
            results[name] = call(limit, spin, seconds)
        except TimeLimitExceeded:
            results[name] = "limit"

    threads = [
        threading.Thread(target=run, args=("slow", 0.2, 30)),
        threading.Thread(target=run, args=("quick", 30, 0.5)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {"slow": "limit", "quick": "spun"}


def test_an_async_handler_is_cancelled_at_its_next_await():
    async def slow() -> str:
        await asyncio.sleep(30)
        return "slept"

    async def quick() -> str:
        await asyncio.sleep(0)
        return "done"

    async def own_timeout() -> str:
        raise TimeoutError("the handler's own timeout")

    with pytest.raises(TimeLimitExceeded, match=r"\(0.2 s\)"):
        asyncio.run(bounded(slow(), 0.2))
    assert asyncio.run(bounded(quick(), 5)) == "done"
    with pytest.raises(TimeoutError, match="own timeout"):  # not mistaken for the limit
        asyncio.run(bounded(own_timeout(), 5))


def test_a_huge_countdown_asked_from_a_task_is_capped_like_a_backoff():
    """``Retry(countdown=1e11)`` used to overflow the eta computed from it and break the retry's send."""
    assert decide(RetryPolicy(), Retry(countdown=1e11), 1).countdown == MAX_DELAY
    assert decide(RetryPolicy(), Retry(countdown=3), 1).countdown == 3
