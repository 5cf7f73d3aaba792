"""What a worker records when a handler's outcome cannot be stored as it is (issue 19, items 5 and 13): a
result JSON cannot carry, or one over ``max_result_size``, fails the attempt once and is never retried
(the handler's side effects would repeat); a huge error or traceback is cut to ``max_error_size``.
Each runs on memory:// and on RabbitMQ with Redis, the task body counting its own runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from cogman import App, Status, TaskFailed
from tests.integration.rabbit_helpers import wait_for
from tests.integration.scheduling_helpers import queue_counts, task_queue_totals

RETRIES = 3
#: The names the error gives the values JSON has no form for, wherever they are nested.
UNENCODABLE = [
    ({1, 2, 3}, "not JSON-serialisable: set"),
    ({"charged_at": datetime(2024, 1, 2, tzinfo=UTC)}, "not JSON-serialisable: datetime"),
    ([1.0, float("nan")], "not JSON-serialisable: ValueError: Out of range float"),
]


@pytest.fixture
def memory_app() -> Iterator[Callable[..., App]]:
    """``memory_app(**options)``: an embedded App (memory broker and backend), closed afterwards."""
    apps: list[App] = []

    def make(**options: Any) -> App:
        made = App("outcomes", broker="memory://", backend="memory://", **options)
        apps.append(made)
        return made

    yield make
    for made in apps:
        made.close()


@pytest.fixture(params=["memory", "rabbitmq+redis"])
def make_app(request: pytest.FixtureRequest) -> Callable[..., App]:
    """``make_app(**options)``: an App on memory://, or on the test vhost with its own Redis prefix."""
    fixture = "memory_app" if request.param == "memory" else "scheduled_app"
    made: Callable[..., App] = request.getfixturevalue(fixture)
    return made


def run_once(app: App, fn: Callable[[], Any], **options: Any) -> tuple[TaskFailed, list[int]]:
    """Register ``fn`` with ``retry=3``, send it once, and return its chain's failure and the runs."""
    runs: list[int] = []

    def body() -> Any:
        runs.append(1)
        return fn()

    task = app.task(name="outcomes.charge", retry=RETRIES, **options)(body)
    worker = app.start_background(concurrency=2)
    try:
        result = task.delay()
        with pytest.raises(TaskFailed) as failed:
            result.get(timeout=60)
        if not app.config.broker_url.startswith("memory"):  # acked once the failure is recorded
            wait_for(lambda: task_queue_totals(queue_counts()) == (0, 0), 30, "the delivery to be acked")
    finally:
        worker.stop()
    record = app.backend.get(result.id)
    assert record is not None and record.status is Status.FAILED
    assert record.latest_attempt_id in (None, record.task_id)  # no retry attempt was ever spawned
    return failed.value, runs


@pytest.mark.parametrize(("value", "named"), UNENCODABLE)
def test_a_result_json_cannot_carry_fails_once_naming_its_type(make_app: Callable[..., App], value: Any, named: str):
    """It used to fail after the handler ran and be retried: retry=3 charged a card 4 times."""
    failed, runs = run_once(make_app(), lambda: value)
    assert len(runs) == 1 and failed.attempts == 1
    assert failed.error is not None and named in failed.error
    assert failed.error.startswith("ResultRejected: result of outcomes.charge is ")


def test_a_result_over_max_result_size_fails_once_naming_both_sizes(make_app: Callable[..., App]):
    app = make_app(max_result_size=1000)
    failed, runs = run_once(app, lambda: "x" * 1000)  # 1002 bytes of JSON, with its quotes
    assert len(runs) == 1 and failed.attempts == 1
    assert failed.error == (
        "ResultRejected: result of outcomes.charge is 1002 bytes of JSON, over max_result_size=1000"
    )


def test_a_result_of_exactly_max_result_size_is_recorded(memory_app: Callable[..., App]):
    app = memory_app(max_result_size=1000)

    @app.task(name="outcomes.fits")
    def fits() -> str:
        return "x" * 998

    worker = app.start_background(concurrency=1)
    try:
        assert fits.delay().get(timeout=30) == "x" * 998
    finally:
        worker.stop()


def test_a_huge_error_and_its_traceback_are_cut_to_max_error_size(make_app: Callable[..., App]):
    app = make_app(max_error_size=1000)

    def explode() -> None:
        raise ValueError("é" * 5000)  # 10,000 bytes of UTF-8

    failed, runs = run_once(app, explode, retry_for=(KeyError,))
    assert len(runs) == 1
    error, trace = failed.error, failed.traceback
    assert error is not None and trace is not None
    full = "ValueError: " + "é" * 5000
    kept, marker = error.split("...[truncated ")
    assert full.startswith(kept) and len(kept.encode()) in (999, 1000)  # never half a character
    assert marker == f"{len(full.encode()) - len(kept.encode())} bytes]"
    first, rest = trace.split("\n", 1)
    assert first.startswith("...[truncated ") and first.endswith(" bytes]")
    assert len(rest.encode()) <= 1000 and rest.endswith("é" * 400 + "\n")


def test_a_huge_dead_letter_reason_is_cut_too(memory_app: Callable[..., App]):
    """An unknown task name is the sender's to choose: its "unhandled task" error is cut as well."""
    app = memory_app(max_error_size=200)
    name = "outcomes." + "n" * 5000
    result = app.send_task(name)
    worker = app.start_background(concurrency=1)
    try:
        wait_for(lambda: result.status is Status.FAILED, 30, "the unknown task to be dead-lettered")
    finally:
        worker.stop()
    record = app.backend.get(result.id)
    assert record is not None and record.fail_error is not None
    assert record.fail_error.startswith("unhandled task: outcomes.nnn")
    assert record.fail_error.endswith(f"...[truncated {len('unhandled task: ') + len(name) - 200} bytes]")
