"""Which deliveries write ``in_progress`` before their handler runs (cogman/worker/first_run.py), on the
real RabbitMQ (the test vhost) and Redis.

In the default profile every delivery does, its first included: that is how a copy of a finished task,
or a task cancelled before it started, is acked unrun. The lean profile skips the start for a message's
only copy, handed out for the first time (``HEADER_FIRST``), and for nothing else. The order is observed
through the backend's own ``start`` calls and the handler's runs.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from amqp.exceptions import NotFound
from kombu import Connection

from cogman import App, Status
from cogman.backends.redis.backend import RedisBackend
from cogman.brokers.base import queue_names
from cogman.message import HEADER_FIRST, Message
from cogman.priority import Priority
from tests.integration.rabbit_helpers import wait_for
from tests.integration.redis_helpers import drop_prefix

QUEUE = queue_names(Priority.HIGH, 1)[0]


@pytest.fixture
def make(rabbit: str, redis_url: str) -> Iterator[Callable[..., App]]:
    """``make(profile)``: an app on the test vhost and the test Redis, under a prefix of its own."""
    apps: list[App] = []

    def made(profile: str = "default") -> App:
        app = App("first", broker=rabbit, backend=redis_url, profile=profile,  # type: ignore[arg-type]
                  redis_prefix=f"first-{uuid.uuid4().hex[:8]}")  # fmt: skip
        assert isinstance(app.backend, RedisBackend)
        apps.append(app)
        return app

    yield made
    for app in apps:
        app.close()
        drop_prefix(redis_url, app.config.redis_prefix)


class Steps:
    """The backend's start calls and the handler runs, in the order they happened."""

    def __init__(self, backend: RedisBackend) -> None:
        self.seen: list[str] = []
        self._lock = threading.Lock()
        start = backend.start

        def spied_start(task_id: str, token: str = "") -> Any:
            self.add("start")
            return start(task_id, token)

        backend.start = spied_start  # type: ignore[method-assign]

    def add(self, step: str) -> None:
        with self._lock:
            self.seen.append(step)


def headers_in_queue(url: str) -> list[dict[str, Any]]:
    """The headers of every message waiting in the first high queue (left there, requeued); none while
    the queue is not declared yet."""
    found = []
    with Connection(url) as connection:
        channel = connection.default_channel
        try:
            while (message := channel.basic_get(QUEUE, no_ack=False)) is not None:
                found.append(dict(message.headers or {}))
        except NotFound:  # not declared yet: the lean profile's sender publishes from its own thread
            return []
        channel.close()  # the unacked ones go back
    return found


def test_only_the_first_publish_of_a_generated_id_is_marked_first(make: Callable[..., App], rabbit: str):
    app = make()

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


@pytest.mark.parametrize("profile", ["default", "lean"])
def test_which_deliveries_start_before_their_handler(make: Callable[..., App], profile: str):
    app = make(profile)
    assert isinstance(app.backend, RedisBackend)
    steps = Steps(app.backend)

    @app.task(name="first.fast")
    def fast(n: int) -> int:
        steps.add("handler")
        return n + 1

    worker = app.start_background(concurrency=1)
    try:
        result = fast.delay(1)
        assert result.get(timeout=30) == 2
        assert steps.seen == (["start", "handler"] if profile == "default" else ["handler"])
        record = app.backend.get(result.id)
        assert record is not None and record.status is Status.SUCCESS and record.result == 2
        assert (Status.IN_PROGRESS in dict(record.history)) is (profile == "default")
        steps.seen.clear()
        assert app.send_task("first.fast", args=(2,), task_id=f"own-{uuid.uuid4()}").get(timeout=30) == 3
        assert steps.seen == ["start", "handler"]  # an id the caller chose may be sent twice: it starts first
    finally:
        worker.stop()


def test_a_redelivered_first_message_starts_before_its_handler_in_the_lean_profile(
    make: Callable[..., App], rabbit: str
):
    app = make("lean")
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


@pytest.mark.parametrize("profile", ["default", "lean"])
def test_a_copy_of_a_finished_task_claiming_to_be_first_runs_again_only_in_the_lean_profile(
    make: Callable[..., App], profile: str
):
    """A copy sent again (no mark) finds the record final and is acked unrun in both profiles; a copy
    that carries the mark (a foreign publisher copying it: cogman never sends one) is skipped in the
    default profile and runs again in the lean one, where the first outcome stands."""
    app = make(profile)
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
        app.broker.publish([Message.for_record(record, retries_left=0)]).wait(10)
        wait_for(lambda: worker.outcomes["skipped"] == 1, 30, "the copy to be skipped")
        assert runs == [7]
        app.broker.publish([Message.for_record(record, retries_left=0, first=True)]).wait(10)
        settled = "skipped" if profile == "default" else "succeeded"
        wait_for(lambda: worker.outcomes[settled] == 2, 30, "the marked copy to be settled")
        assert runs == ([7] if profile == "default" else [7, 7])
        final = app.backend.get(result.id)
        assert final is not None and final.status is Status.SUCCESS and final.result == 1
    finally:
        worker.stop()
