"""The lean profile (``Config.profile="lean"``, docs/guarantees.md#the-lean-profile) on the real RabbitMQ
(the test vhost) and Redis: what it trades, and what it keeps.

Traded: ``.delay()`` returns before its record is written and its message published (a background thread
sends them; a crash of the sender loses what it had not sent), and a message's first run writes no
``in_progress``. Kept: the buffer's bound (observable, enforced with a clear error), ``close()`` sending
what waits, the duplicate check of redeliveries, retries, dead-lettering, ``get()`` and ``wait_sent()``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu import Connection

from cogman import App, Status, TaskCancelled, TaskFailed, chain
from cogman.backends.redis.backend import RedisBackend
from cogman.brokers.base import DEAD_LETTER_QUEUE, queue_names
from cogman.config.environment import options_from_env
from cogman.errors import ConfigError, PublishError, SendBufferFull
from cogman.message import HEADER_FIRST, Message
from cogman.priority import Priority
from tests.integration.consuming_helpers import publish_raw
from tests.integration.rabbit_helpers import wait_for

QUEUE = queue_names(Priority.HIGH, 1)[0]


@pytest.fixture
def lean(rabbit: str, redis_url: str) -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(**options: Any) -> App:
        app = App("lean", broker=rabbit, backend=redis_url, profile="lean", **options)
        apps.append(app)
        return app

    redis.Redis.from_url(redis_url).flushdb()
    yield make
    for app in reversed(apps):
        app.close()


def queue_depth(url: str, queue: str) -> int:
    with Connection(url) as connection:
        return int(connection.default_channel.queue_declare(queue, passive=True).message_count)


def test_the_profile_is_one_setting_also_read_from_the_environment():
    assert options_from_env({"COGMAN_PROFILE": "lean"}) == {"profile": "lean"}
    with pytest.raises(ConfigError, match="COGMAN_PROFILE"):
        options_from_env({"COGMAN_PROFILE": "fast"})
    with pytest.raises(ConfigError, match="profile must be 'default' or 'lean'"):
        App("bad", broker="memory://", backend="memory://", profile="fast")
    with pytest.raises(ConfigError, match="send_buffer_limit"):
        App("bad", broker="memory://", backend="memory://", profile="lean", send_buffer_limit=0)


def test_delay_returns_before_redis_the_buffer_is_bounded_and_close_sends_what_waits(
    lean: Callable[..., App], rabbit: str, redis_url: str
):
    app = lean(send_buffer_limit=10, request_timeout=0.2)
    assert isinstance(app.backend, RedisBackend)
    direct = RedisBackend(redis_url, app.config)
    gate = threading.Event()
    create = app.backend.create

    def held_create(*args: Any, **kwargs: Any) -> bool:  # Redis is slow: the background thread waits
        gate.wait(30)
        return create(*args, **kwargs)

    app.backend.create = held_create  # type: ignore[method-assign]

    @app.task(name="lean.job")
    def job(n: int) -> int:
        return n

    try:
        results = [job.delay(i) for i in range(10)]  # none waits for Redis or RabbitMQ
        background = app.client.background
        assert background is not None and background.waiting == 10
        assert all(direct.get(r.id) is None for r in results)
        with pytest.raises(SendBufferFull, match=r"10 task\(s\) wait .*send_buffer_limit=10.* lean.job not sent"):
            job.delay(10)
        gate.set()
        app.close()  # sends what waits before the broker's outbox drains
        assert [direct.get(r.id).status for r in results] == [Status.QUEUED] * 10  # type: ignore[union-attr]
        assert all(r.wait_sent(5) for r in results)
        assert queue_depth(rabbit, QUEUE) == 10  # the refused send left nothing behind
    finally:
        gate.set()
        direct.close()


def test_a_first_run_writes_no_in_progress_and_a_redelivery_is_still_checked(lean: Callable[..., App], rabbit: str):
    app = lean()
    seen: dict[str, Status] = {}
    ids: dict[str, str] = {}

    @app.task(name="lean.look")
    def look(tag: str) -> str:
        if tag in ids:
            record = app.backend.get(ids[tag])
            seen[tag] = record.status if record else Status.INITIATED
        return tag

    again = look.delay("again")
    ids["again"] = again.id
    assert again.wait_sent(10)
    with Connection(rabbit) as connection:  # handed out once and given back: RabbitMQ marks it redelivered
        channel = connection.default_channel
        message = channel.basic_get(QUEUE, no_ack=False)
        assert message is not None and message.headers[HEADER_FIRST] == "1"
        channel.basic_reject(message.delivery_tag, requeue=True)
        channel.close()
    worker = app.start_background(concurrency=1)
    try:
        assert again.get(timeout=30) == "again"
        first = look.delay("first")
        assert first.get(timeout=30) == "first"
        assert seen["again"] is Status.IN_PROGRESS  # a redelivery starts (and is checked) as by default
        record = app.backend.get(first.id)
        assert record is not None and record.status is Status.SUCCESS
        assert Status.IN_PROGRESS not in dict(record.history)  # a first run goes from queued to its outcome
        copy = Message.for_record(record, retries_left=0)  # sent again (no first mark): checked, skipped
        app.broker.publish([copy]).wait(10)
        wait_for(lambda: worker.outcomes["skipped"] == 1, 30, "the copy of a finished task to be skipped")
        assert worker.outcomes["succeeded"] == 2
    finally:
        worker.stop()


def test_retries_dead_lettering_and_results_are_kept(lean: Callable[..., App], rabbit: str):
    app = lean()
    tries: list[int] = []

    @app.task(name="lean.flaky", retry=2, retry_backoff=0)
    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise OSError("not yet")
        return "done"

    @app.task(name="lean.broken", retry=1, retry_backoff=0)
    def broken() -> None:
        raise ValueError("always")

    worker = app.start_background(concurrency=2)
    try:
        assert flaky.delay().get(timeout=30) == "done" and len(tries) == 3
        failing = broken.delay()
        with pytest.raises(TaskFailed, match="ValueError: always") as failed:
            failing.get(timeout=30)
        assert failed.value.attempts == 2
        task_id = str(uuid.uuid4())
        publish_raw(rabbit, QUEUE, [(b"{not json", {"headers": {"TaskID": task_id, "TaskName": "lean.flaky"}})])
        wait_for(lambda: worker.outcomes["dead_lettered"] == 1, 30, "the bad message to be dead-lettered")
        wait_for(lambda: queue_depth(rabbit, DEAD_LETTER_QUEUE) == 1, 10, "the dead letter")
    finally:
        worker.stop()


def test_a_chain_runs_through_with_the_steps_a_worker_sends_in_the_background(lean: Callable[..., App]):
    app = lean()

    @app.task(name="lean.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="lean.mul")
    def mul(a: int, b: int) -> int:
        return a * b

    worker = app.start_background(concurrency=2)
    try:
        assert chain(add.s(1, 2), add.s(10), mul.s(3)).delay().get(timeout=30) == 39
    finally:
        worker.stop()


def test_sends_batched_together_are_each_recorded_and_confirmed(lean: Callable[..., App], rabbit: str):
    """The background thread sends many hand-offs at once (single sends and a ``send_many``): each is
    recorded, published and confirmed, and its handle's ``wait_sent()`` says so."""
    app = lean()

    @app.task(name="lean.many")
    def many(n: int) -> int:
        return n

    results = [many.delay(i) for i in range(300)] + many.send_many([(i,) for i in range(300, 600)])
    assert all(r.wait_sent(30) for r in results)
    assert {app.backend.get(r.id).status for r in results} == {Status.QUEUED}  # type: ignore[union-attr]
    assert queue_depth(rabbit, QUEUE) == 600


def test_wait_sent_is_true_only_once_the_record_is_written_too_not_at_the_confirm(lean: Callable[..., App]):
    """The broker settles a hand-off as it confirms its message, while Redis may still be writing the
    record (the publish goes out meanwhile): the hand-off counts the records' write too, so a workflow
    step's ack, which waits for it, never comes before the next step is recorded."""
    app = lean()
    create = app.backend.create
    written, gate = threading.Event(), threading.Event()

    def slow_reply(*args: Any, **kwargs: Any) -> bool:
        durable = create(*args, **kwargs)  # published meanwhile, and Redis replied
        written.set()
        gate.wait(30)  # ... but the background thread has not seen the reply yet
        return durable

    app.backend.create = slow_reply  # type: ignore[method-assign]

    @app.task(name="lean.gated")
    def gated(n: int) -> int:
        return n

    handle = gated.delay(1)
    assert written.wait(30)
    wait_for(lambda: app.broker.pending() == 0, 30, "RabbitMQ to confirm the message")
    assert not handle.wait_sent(timeout=0)  # confirmed, but its record's write has not returned
    gate.set()
    assert handle.wait_sent(timeout=30)


def test_a_task_cancelled_before_its_first_delivery_starts_and_is_interrupted(lean: Callable[..., App]):
    """What the lean profile trades on cancel (docs/guarantees.md): its first delivery reads nothing
    before the handler, so the handler starts; the worker's cancel poll interrupts it, and the record
    stays ``cancelled``, with no result."""
    app = lean()
    began, finished = threading.Event(), threading.Event()

    @app.task(name="lean.long")
    def long() -> str:
        began.set()
        for _ in range(3000):  # work in steps: an interrupt lands between them
            finished.wait(0.01)
        finished.set()
        return "finished"

    result = long.delay()
    assert result.wait_sent(timeout=30)
    assert result.cancel() is True
    worker = app.start_background(concurrency=1)
    try:
        assert began.wait(30), "the first delivery's handler did not start"
        wait_for(lambda: worker.outcomes["cancelled"] == 1, 30, "the poll to interrupt the run")
        assert not finished.is_set()
        record = app.backend.get(result.id)
        assert record is not None and record.status is Status.CANCELLED and record.result is None
        with pytest.raises(TaskCancelled):
            result.get(timeout=5)
    finally:
        worker.stop()


def test_the_background_sender_outlives_a_base_exception_and_fails_that_batch_loudly(lean: Callable[..., App]):
    app = lean()
    create = app.backend.create
    calls: list[int] = []

    def dying_once(*args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise SystemExit("a middleware called sys.exit")
        return create(*args, **kwargs)

    app.backend.create = dying_once  # type: ignore[method-assign]

    @app.task(name="lean.survivor")
    def survivor(n: int) -> int:
        return n

    lost = survivor.delay(1)
    with pytest.raises(PublishError, match=r"SystemExit: a middleware called sys\.exit"):
        lost.wait_sent(timeout=30)
    kept = survivor.delay(2)
    assert kept.wait_sent(timeout=30)
    worker = app.start_background(concurrency=1)
    try:
        assert kept.get(timeout=30) == 2
    finally:
        worker.stop()
