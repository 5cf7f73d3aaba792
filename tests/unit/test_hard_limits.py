"""The hard time limit's pieces that need no process (issue 19, item 9): its error, and what a worker
process reports to its supervisor. tests/integration/test_hard_time_limit.py runs the whole of it."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cogman import App, TimeLimitExceeded
from cogman.backoff import RetryPolicy, decide
from cogman.errors import HardTimeLimitExceeded
from cogman.status import Status
from cogman.worker import limits
from cogman.worker.hard_limits import Reporter


@pytest.fixture
def ends() -> Iterator[list[int]]:
    """Handler thread ids, as limits.py reports the ends of time-limited handlers."""
    reported: list[int] = []
    limits.report_ends_to(reported.append)
    yield reported
    limits.report_ends_to(None)


def test_the_hard_limits_error_is_a_time_limit_error():
    error = HardTimeLimitExceeded(30, 10)
    assert isinstance(error, TimeLimitExceeded)
    assert str(error) == "hard time limit exceeded (30 s + 10 s grace): its worker process was ended"
    assert decide(RetryPolicy(retry_for=(TimeLimitExceeded,)), error, 1).retry
    assert not decide(RetryPolicy(retry_for=(ValueError,)), error, 1).retry


def test_the_end_of_a_limited_handler_is_reported_from_its_own_thread(ends: list[int]):
    """As soon as the handler is over (before any outcome is recorded), returned or raised, sync or
    async: an async one runs on the loop's thread but names the handler thread that waits for it."""
    here = threading.get_ident()
    assert limits.call(30, int) == 0
    with pytest.raises(ValueError):
        limits.call(30, int, "x")

    async def coroutine() -> int:
        return 1

    loop_thread: list[int] = []

    def run_loop() -> None:
        loop_thread.append(threading.get_ident())
        asyncio.run(bounded)

    bounded = limits.bounded(coroutine(), 30)  # made here, on the "handler thread"
    runner = threading.Thread(target=run_loop)
    runner.start()
    runner.join(10)
    assert loop_thread and loop_thread[0] != here
    assert ends == [here, here, here]


def test_a_worker_process_reports_its_time_limited_tasks_only(app: App):
    """A start when a task with a ``time_limit`` starts and an end when its handler ends, from the
    handler thread; nothing for a task without one."""
    reader, writer = multiprocessing.Pipe(duplex=False)
    Reporter(app, writer).install()
    ran: list[int] = []

    @app.task(name="hard.timed", time_limit=30)
    def timed() -> int:
        ran.append(threading.get_ident())
        return 1

    @app.task(name="hard.failing", time_limit=30)
    def failing() -> None:
        raise ValueError("no")

    @app.task(name="hard.waiting", time_limit=30)
    async def waiting() -> int:
        await asyncio.sleep(0)
        return 2

    @app.task(name="hard.untimed")
    def untimed() -> int:
        return 3

    worker = app.start_background(concurrency=1)
    sent = {}
    try:
        for task in (timed, failing, waiting, untimed):
            sent[task.name] = task.delay().id
            record = app.backend.wait(sent[task.name], 10)
            assert record is not None and record.status in (Status.SUCCESS, Status.FAILED)
    finally:
        worker.stop()
        limits.report_ends_to(None)
    reports: list[tuple[Any, ...]] = []
    while reader.poll():
        reports.append(reader.recv())
    thread = ran[0]  # one handler thread: every report names it
    assert reports == [
        ("start", thread, sent["hard.timed"], 30.0),
        ("end", thread),
        ("start", thread, sent["hard.failing"], 30.0),
        ("end", thread),
        ("start", thread, sent["hard.waiting"], 30.0),
        ("end", thread),
    ]
