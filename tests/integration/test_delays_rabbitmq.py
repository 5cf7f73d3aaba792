"""Delayed tasks and expiry on the real RabbitMQ (the delay ladder) with Redis records.

Lower bounds are exact (a task never starts before its planned moment, by the records' own clocks);
upper bounds allow ``LATE`` seconds for a busy machine. Waiting for a countdown to pass is what these
tests are about, so they poll the records with a deadline; they never sleep instead of observing.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import amqp.exceptions
import pytest
import redis
from kombu import Connection

from cogman import App, Status, TaskFailed
from cogman.backends.base import TaskQuery
from cogman.brokers.base import DEAD_LETTER_QUEUE
from cogman.brokers.rabbitmq.delay_ladder import DELIVERY_EXCHANGE, UNROUTABLE_EXCHANGE, level_arguments, level_name
from cogman.delays import LEVELS
from cogman.errors import PublishError, TopologyError
from cogman.message import Message
from cogman.priority import Priority
from cogman.record import utcnow
from cogman.sending.client import new_record
from cogman.worker.execution import Outcome
from tests.integration.rabbit_helpers import (
    LADDER_QUEUES,
    VHOST,
    broker_stopped,
    consumer_count,
    depth,
    list_queues,
    rabbitmqctl,
    wait_for,
    worker_process,
)
from tests.integration.scheduling_helpers import (
    LATE,
    in_ladder,
    queue_counts,
    reached,
    task_queue_totals,
)


def test_countdown_runs_no_earlier_than_asked_and_soon_after(scheduled_app: Callable[..., App]):
    app = scheduled_app()

    @app.task(name="delays.echo")
    def echo(value: float) -> float:
        return value

    worker = app.start_background(concurrency=4)
    sent = {}
    for countdown in (0.0, 1.0, 1.5, 2.5, 3.0):
        before = utcnow()
        sent[countdown] = (before, echo.send(args=(countdown,), countdown=countdown))
    for countdown, (before, result) in sent.items():
        assert result.get(timeout=countdown + 30) == countdown
        record = result.record()
        started = reached(record, Status.IN_PROGRESS)
        assert started >= before + timedelta(seconds=countdown), (countdown, started - before)
        assert started <= before + timedelta(seconds=countdown + LATE), (countdown, started - before)
        if countdown:
            assert record.eta is not None and before + timedelta(seconds=countdown) <= record.eta <= started
        else:
            assert record.eta is None
    assert worker.outcomes[Outcome.DELAYED] == 0  # nothing came early: the ladder rounds up


def test_eta_aware_or_naive_utc(scheduled_app: Callable[..., App]):
    app = scheduled_app()

    @app.task(name="delays.when")
    def when() -> str:
        return datetime.now(UTC).isoformat()

    app.start_background(concurrency=2)
    plus_two = timezone(timedelta(hours=2))
    aware = datetime.now(plus_two) + timedelta(seconds=2)
    naive = (datetime.now(UTC) + timedelta(seconds=1.5)).replace(tzinfo=None)
    results = [(aware, when.send(eta=aware)), (naive.replace(tzinfo=UTC), when.apply_async(eta=naive))]
    for eta, result in results:
        ran = datetime.fromisoformat(result.get(timeout=30))
        record = result.record()
        assert record.eta == eta
        assert eta <= reached(record, Status.IN_PROGRESS) <= ran <= eta + timedelta(seconds=LATE)


def test_ten_thousand_delayed_tasks_wait_in_rabbitmq_not_in_the_worker(scheduled_app: Callable[..., App]):
    """Scheduled an hour ahead, they sit in the ladder's level 11 (3600 s = 0b111000010000: 2048 s
    first); the worker holds none of them (no unacked message, nothing ready in its queues) and still
    runs a task sent now at once."""
    app = scheduled_app()

    @app.task(name="delays.later")
    def later(index: int) -> int:
        return index

    calls = [((index,), {}) for index in range(10_000)]
    for start in range(0, len(calls), 2_500):
        app.send_many("delays.later", calls[start : start + 2_500], countdown=3600)
    worker = app.start_background(concurrency=4)
    assert later.delay(-1).get(timeout=30) == -1  # the worker consumes, and is not held up

    counts = queue_counts()
    assert in_ladder(counts) == {level_name(11): 10_000}
    assert task_queue_totals(counts) == (0, 0)
    assert worker.outcomes[Outcome.SUCCEEDED] == 1 and worker.outcomes[Outcome.DELAYED] == 0


def test_delays_survive_a_worker_restart(rabbit: str, redis_url: str, tmp_path):
    """Worker process A is up when the tasks are sent and stops before they are due; B, started after,
    runs each once, no earlier than planned."""
    prefix = f"delaytest-{uuid.uuid4().hex[:8]}"
    env = {"COGMAN_BROKER_URL": rabbit, "COGMAN_BACKEND_URL": redis_url, "COGMAN_TEST_PREFIX": prefix}
    app = App("delays", broker=rabbit, backend=redis_url, redis_prefix=prefix)
    runs = redis.Redis.from_url(redis_url)
    first = worker_process("tests.integration.delays_app:app", env, "-c", "2", log=tmp_path / "a.log")
    second = None
    try:
        wait_for(lambda: consumers(rabbit) == 1, 60, "worker A to consume")
        before = utcnow()
        results = [app.send_task("delays.stamp", (index,), countdown=3) for index in range(3)]
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0
        assert all(r.wait_sent(30) and r.status is Status.QUEUED for r in results)
        assert not runs.keys(f"{prefix}:runs:*")

        second = worker_process("tests.integration.delays_app:app", env, "-c", "2", log=tmp_path / "b.log")
        pids = {r.get(timeout=60) for r in results}
        assert pids == {second.pid}
        for index, result in enumerate(results):
            assert reached(result.record(), Status.IN_PROGRESS) >= before + timedelta(seconds=3)
            assert runs.get(f"{prefix}:runs:{index}") == b"1"
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        app.close()
        keys = list(runs.scan_iter(f"{prefix}:*"))
        if keys:
            runs.delete(*keys)


def consumers(rabbit: str) -> int:
    """Consumers of the first high queue; 0 while no worker has declared it yet."""
    try:
        return consumer_count(rabbit, "high_priority_queue_0")
    except amqp.exceptions.NotFound:
        return 0


@pytest.mark.disruptive
def test_a_delayed_message_survives_a_broker_restart(rabbit: str, scheduled_app: Callable[..., App]):
    """Durable ladder queues, persistent messages: a task waiting in the ladder when RabbitMQ stops
    still runs once it is back, no earlier than planned."""
    app = scheduled_app()

    @app.task(name="delays.survivor")
    def survivor() -> str:
        return "ran"

    before = utcnow()
    result = survivor.send(countdown=6)
    assert result.wait_sent(30)
    wait_for(lambda: sum(in_ladder(queue_counts()).values()) == 1, 30, "the message to wait in the ladder")
    with broker_stopped(rabbit):
        assert result.status is Status.QUEUED
    app.start_background(concurrency=1)
    assert result.get(timeout=60) == "ran"
    assert reached(result.record(), Status.IN_PROGRESS) >= before + timedelta(seconds=6)


def test_an_expired_task_never_runs_and_is_recorded_failed(scheduled_app: Callable[..., App]):
    app = scheduled_app()
    ran: list[int] = []

    @app.task(name="delays.perishable")
    def perishable(index: int) -> int:
        ran.append(index)
        return index

    expiring = perishable.send(args=(1,), expires=0.5)
    deadline = expiring.record().expires
    assert deadline is not None
    fresh = perishable.send(args=(2,), expires=3600)
    wait_for(lambda: datetime.now(UTC) > deadline, 10, "the expiry to pass")  # no worker meanwhile
    worker = app.start_background(concurrency=2)

    assert fresh.get(timeout=30) == 2
    with pytest.raises(TaskFailed, match="expired: not started before " + deadline.isoformat().replace("+", r"\+")):
        expiring.get(timeout=30)
    record = expiring.record()
    assert record.status is Status.FAILED and Status.IN_PROGRESS not in dict(record.history)
    assert ran == [2] and worker.outcomes[Outcome.EXPIRED] == 1
    wait_for(lambda: task_queue_totals(queue_counts()) == (0, 0), 30, "the expired message to be acked")
    assert app.broker.dead_letters() == []  # acked, not dead-lettered


def test_a_retry_whose_backoff_ends_after_expires_is_expired(scheduled_app: Callable[..., App]):
    app = scheduled_app()

    @app.task(name="delays.flaky", retry=3, retry_backoff=3)
    def flaky() -> None:
        raise ConnectionError("down")

    app.start_background(concurrency=1)
    result = flaky.send(expires=2)
    with pytest.raises(TaskFailed, match="expired"):
        result.get(timeout=30)
    latest = result.latest()
    assert latest.attempt == 2 and latest.expires == result.record().expires
    assert Status.IN_PROGRESS not in dict(latest.history)


def test_an_early_delivery_goes_back_to_the_ladder(rabbit: str, scheduled_app: Callable[..., App]):
    """A foreign producer puts a message due in 3 s straight into a task queue. The worker takes it,
    sees it is early and publishes it into the ladder for the rest (acking the original): nothing is
    held by the worker meanwhile, and the task starts no earlier than its eta."""
    app = scheduled_app()

    @app.task(name="delays.foreign")
    def foreign() -> str:
        return "on time"

    worker = app.start_background(concurrency=2)
    eta = utcnow() + timedelta(seconds=3)
    record = new_record("delays.foreign", (), {}, priority=Priority.HIGH, retry=0, primary_key=None, eta=eta)
    app.backend.create([record])
    task_id = record.task_id
    message = Message.for_record(record, retries_left=0)
    with Connection(rabbit) as connection:
        producer = connection.Producer()
        producer.publish(
            message.encode(), routing_key="high_priority_queue_0", headers=message.headers, delivery_mode=2
        )
    wait_for(lambda: worker.outcomes[Outcome.DELAYED] == 1, 30, "the worker to send the early delivery back")
    wait_for(lambda: sum(in_ladder(queue_counts()).values()) == 1, 30, "the message to wait in the ladder")
    assert task_queue_totals(queue_counts()) == (0, 0)
    assert app.result(task_id).get(timeout=30) == "on time"
    assert reached(app.backend.get(task_id), Status.IN_PROGRESS) >= eta  # type: ignore[arg-type]


def test_the_ladder_is_declared_with_its_levels(scheduled_app: Callable[..., App]):
    app = scheduled_app()
    app.send_task("delays.anything", countdown=1)
    queues = list_queues()
    for level in range(LEVELS):
        queue = queues[level_name(level)]
        assert (queue["durable"], queue["type"]) == (True, "classic")
        assert queue["arguments"] == level_arguments(level, "classic")
    assert level_arguments(0, "classic")["x-dead-letter-exchange"] == DELIVERY_EXCHANGE


def test_the_ladder_on_quorum_queues(scheduled_app: Callable[..., App]):
    app = scheduled_app(queue_type="quorum")

    @app.task(name="delays.replicated")
    def replicated() -> str:
        return "ok"

    app.start_background(concurrency=1)
    before = utcnow()
    result = replicated.send(countdown=1)
    queues = list_queues()
    assert {queues[name]["type"] for name in LADDER_QUEUES} == {"quorum"}
    assert queues[level_name(5)]["arguments"] == level_arguments(5, "quorum")
    assert result.get(timeout=30) == "ok"
    assert reached(result.record(), Status.IN_PROGRESS) >= before + timedelta(seconds=1)


def test_a_delayed_message_whose_queue_is_gone_is_dead_lettered_not_dropped(
    rabbit: str, scheduled_app: Callable[..., App]
):
    app = scheduled_app(high_priority_queue_count=2)
    result = app.send_task("delays.orphan", countdown=2)
    with Connection(rabbit) as connection:  # both task queues (and so their bindings) disappear
        channel = connection.channel()
        channel.queue_delete("high_priority_queue_0")
        channel.queue_delete("high_priority_queue_1")
    wait_for(lambda: depth(rabbit, DEAD_LETTER_QUEUE) == 1, 30, "the message to reach the dead-letter queue")
    [dead] = app.broker.dead_letters()
    assert dead.headers["TaskID"] == result.id and result.status is Status.QUEUED
    assert dead.headers["x-first-death-reason"] == "expired"  # it left the ladder, found no queue


def test_a_ladder_of_another_queue_type_is_a_clear_error(rabbit: str, scheduled_app: Callable[..., App]):
    scheduled_app().send_task("delays.anything", countdown=1)  # a classic ladder, with a message in it
    with Connection(rabbit) as connection:  # the task queues go, the ladder stays
        channel = connection.channel()
        for name in ("high_priority_queue_0", "low_priority_queue_0", DEAD_LETTER_QUEUE):
            channel.queue_delete(name)
    with pytest.raises(TopologyError, match=r"delay ladder .*cogman\.delay\.\d+.*queue_type"):
        scheduled_app(queue_type="quorum").send_task("delays.anything")


@pytest.mark.disruptive
def test_the_delay_is_computed_when_the_message_is_published(rabbit: str, scheduled_app: Callable[..., App]):
    """Sent while RabbitMQ is down, a task waits in the offline outbox; published after its eta has
    passed, it goes straight to its task queue, not through the ladder: time in the outbox counts."""
    app = scheduled_app()
    with broker_stopped(rabbit):
        result = app.send_task("delays.outboxed", countdown=2)
        eta = result.record().eta
        assert eta is not None and app.broker.pending() == 1
        wait_for(lambda: datetime.now(UTC) > eta, 10, "the eta to pass while RabbitMQ is down")
    wait_for(lambda: app.broker.pending() == 0, 60, "the outbox to be flushed")
    assert result.status is Status.QUEUED
    assert depth(rabbit, "high_priority_queue_0") == 1 and in_ladder(queue_counts()) == {}


def test_a_user_who_may_not_declare_the_ladder_still_sends_plain_tasks(rabbit: str, scheduled_app: Callable[..., App]):
    """No permission to configure ``cogman.delay.*`` and no ladder in the vhost: a warning, plain tasks
    go as before, and a delayed one is refused alone (its record says why), never parked forever."""
    with Connection(rabbit) as connection:
        channel = connection.channel()
        for name in [*LADDER_QUEUES, DELIVERY_EXCHANGE, UNROUTABLE_EXCHANGE]:
            channel.exchange_delete(name)
    user = f"{VHOST}_noladder"
    rabbitmqctl("delete_user", user, check=False)
    rabbitmqctl("add_user", user, "secret")
    try:
        rabbitmqctl("set_permissions", "-p", VHOST, user, r"^(?!cogman\.delay\.).*", ".*", ".*")
        host = rabbit.split("@", 1)[1]
        app = scheduled_app(broker=f"amqp://{quote(user)}:secret@{host}", send_mode="confirmed")
        plain = app.send_task("delays.plain")
        assert plain.status is Status.QUEUED
        with pytest.raises(PublishError, match="NOT_FOUND"):
            app.send_task("delays.delayed", countdown=5)
        [delayed] = [r for r in app.backend.query(TaskQuery()).records if r.name == "delays.delayed"]
        assert delayed.status is Status.FAILED and "NOT_FOUND" in str(delayed.fail_error)
        assert plain.status is Status.QUEUED and depth(rabbit, "high_priority_queue_0") == 1
    finally:
        rabbitmqctl("delete_user", user, check=False)
