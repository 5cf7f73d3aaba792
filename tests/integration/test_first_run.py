"""A first delivery runs its handler while its ``in_progress`` write is on its way (cogman/worker/first_run.py),
on the real RabbitMQ (the test vhost) and Redis.

The order of the three steps is observed through the backend's own calls (``start_soon`` sent, the
handler, its reply read): a first delivery reads the reply after its handler ran, every other delivery
(a redelivery, a copy sent again, an explicit task id, a bound handler) before, as before.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kombu import Connection

from cogman import App, Status, TaskContext
from cogman.backends.redis.backend import RedisBackend
from cogman.brokers.base import queue_names
from cogman.message import HEADER_FIRST, Message
from cogman.priority import Priority
from tests.integration.rabbit_helpers import wait_for

QUEUE = queue_names(Priority.HIGH, 1)[0]


@pytest.fixture
def app(rabbit: str, redis_url: str) -> Iterator[App]:
    made = App("first", broker=rabbit, backend=redis_url)
    assert isinstance(made.backend, RedisBackend)
    made.backend.client.flushdb()
    yield made
    made.close()


class Steps:
    """The backend's start calls and the handler runs, in the order they happened."""

    def __init__(self, backend: RedisBackend) -> None:
        self.seen: list[str] = []
        self._lock = threading.Lock()
        start, start_soon = backend.start, backend.start_soon

        def spied_start(task_id: str, token: str = "") -> Any:
            self.add("start")
            return start(task_id, token)

        def spied_soon(task_id: str, token: str = "") -> Callable[[], Any]:
            self.add("sent")
            reply = start_soon(task_id, token)

            def read() -> Any:
                self.add("read")
                return reply()

            return read

        backend.start, backend.start_soon = spied_start, spied_soon  # type: ignore[method-assign]

    def add(self, step: str) -> None:
        with self._lock:
            self.seen.append(step)


def headers_in_queue(url: str) -> list[dict[str, Any]]:
    """The headers of every message waiting in the first high queue (left there, requeued)."""
    found = []
    with Connection(url) as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(QUEUE, no_ack=False)) is not None:
            found.append(dict(message.headers or {}))
        channel.close()  # the unacked ones go back
    return found


def test_only_the_first_publish_of_a_generated_id_is_marked_first(app: App, rabbit: str):
    @app.task(name="first.mark")
    def mark() -> None:
        return None

    mark.delay()
    app.send_task("first.mark", task_id="chosen-by-the-caller")
    again = Message(task_id=str(uuid.uuid4()), name="first.mark", original_task_id="x", priority=Priority.HIGH)
    object.__setattr__(again, "first", True)
    app.broker.publish([again]).wait(10)
    assert not again.first and HEADER_FIRST not in again.headers  # sent once: an orphan replayed is not first
    marks = [headers.get(HEADER_FIRST) for headers in headers_in_queue(rabbit)]
    assert marks == ["1", None, "1"]


def test_a_first_delivery_runs_its_handler_before_reading_its_start(app: App):
    assert isinstance(app.backend, RedisBackend)
    steps = Steps(app.backend)
    statuses: list[Status] = []

    @app.task(name="first.fast")
    def fast(n: int) -> int:
        steps.add("handler")
        return n + 1

    @app.task(name="first.bound", bind=True)
    def bound(ctx: TaskContext) -> int:
        steps.add("handler")
        record = app.backend.get(ctx.task_id)
        statuses.append(record.status if record else Status.INITIATED)
        return ctx.attempt

    worker = app.start_background(concurrency=1)
    try:
        result = fast.delay(1)
        assert result.get(timeout=30) == 2
        assert steps.seen == ["sent", "handler", "read"]
        record = app.backend.get(result.id)
        assert record is not None and record.status is Status.SUCCESS and record.result == 2
        assert Status.IN_PROGRESS in dict(record.history)  # the start was written all the same
        steps.seen.clear()
        assert app.send_task("first.fast", args=(2,), task_id=f"own-{uuid.uuid4()}").get(timeout=30) == 3
        assert steps.seen == ["start", "handler"]  # an id the caller chose may be sent twice: it waits
        steps.seen.clear()
        assert bound.delay().get(timeout=30) == 1
        assert steps.seen == ["start", "handler"] and statuses == [Status.IN_PROGRESS]  # its context needs it
    finally:
        worker.stop()


def test_a_redelivered_first_message_waits_for_its_start(app: App, rabbit: str):
    assert isinstance(app.backend, RedisBackend)
    steps = Steps(app.backend)

    @app.task(name="first.again")
    def again() -> str:
        steps.add("handler")
        return "ok"

    result = again.delay()
    wait_for(lambda: headers_in_queue(rabbit), 10, "the message in its queue")
    with Connection(rabbit) as connection:  # handed out once and given back: RabbitMQ marks it redelivered
        channel = connection.default_channel
        message = channel.basic_get(QUEUE, no_ack=False)
        assert message is not None and message.headers[HEADER_FIRST] == "1"
        channel.basic_reject(message.delivery_tag, requeue=True)
        channel.close()
    worker = app.start_background(concurrency=1)
    try:
        assert result.get(timeout=30) == "ok"
        assert steps.seen == ["start", "handler"]
    finally:
        worker.stop()


def test_a_copy_of_a_finished_task_is_skipped_unless_it_claims_to_be_the_first(app: App, rabbit: str):
    """A copy sent again (no mark) finds the record final and is acked unrun, as before; a copy that
    carries the mark (a foreign publisher copying it: cogman never sends one) runs again, and the first
    outcome stands."""
    runs: list[int] = []

    @app.task(name="first.once")
    def once(n: int) -> int:
        runs.append(n)
        return len(runs)

    worker = app.start_background(concurrency=1)
    try:
        result = once.delay(7)
        assert result.get(timeout=30) == 1
        record = app.backend.get(result.id)
        assert record is not None
        copy = Message.for_record(record, retries_left=0)
        app.broker.publish([copy]).wait(10)
        wait_for(lambda: worker.outcomes["skipped"] == 1, 30, "the copy to be skipped")
        assert runs == [7]
        marked = Message.for_record(record, retries_left=0, first=True)
        app.broker.publish([marked]).wait(10)
        wait_for(lambda: worker.outcomes["skipped"] == 2, 30, "the marked copy to be settled")
        assert runs == [7, 7]
        final = app.backend.get(result.id)
        assert final is not None and final.status is Status.SUCCESS and final.result == 1
    finally:
        worker.stop()
