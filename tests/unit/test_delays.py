"""Send-time options (countdown, eta, expires), the delay ladder's arithmetic, and the memory broker's
delays. No services: the ladder's routing is simulated here by its own binding patterns, so every delay
is shown to wait exactly its whole seconds; test_delays_rabbitmq.py shows RabbitMQ doing it."""

from __future__ import annotations

import fnmatch
import threading
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cogman import App, Priority, Status, TaskContext, TaskFailed, TaskRecord
from cogman.admin.actions import QueueReport, retry_task
from cogman.backends.base import TaskQuery
from cogman.brokers.memory import MemoryBroker
from cogman.brokers.rabbitmq.delay_ladder import (
    DELIVERY_EXCHANGE,
    delay_routing_key,
    level_arguments,
    level_bindings,
    level_name,
    route,
)
from cogman.delays import LEVELS, MAX_DELAY, plan, whole_seconds_until
from cogman.message import Message
from cogman.sending.client import new_record
from cogman.worker.execution import Outcome

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


# Send options


def test_countdown_and_eta_become_one_planned_moment():
    assert plan(countdown=2.5, now=NOW).eta == NOW + timedelta(seconds=2.5)
    assert plan(eta=NOW + timedelta(hours=1), now=NOW).eta == NOW + timedelta(hours=1)
    naive = datetime(2030, 1, 1, 13, 0, 0)  # naive means UTC
    assert plan(eta=naive, now=NOW).eta == datetime(2030, 1, 1, 13, 0, 0, tzinfo=UTC)
    paris = timezone(timedelta(hours=1))
    assert plan(eta=datetime(2030, 1, 1, 14, 0, tzinfo=paris), now=NOW).eta == NOW + timedelta(hours=1)
    assert plan(now=NOW) == plan(countdown=None, eta=None, expires=None, now=NOW)
    assert plan(now=NOW).eta is None and plan(now=NOW).expires is None


def test_expires_in_seconds_or_as_a_moment():
    assert plan(expires=30, now=NOW).expires == NOW + timedelta(seconds=30)
    assert plan(expires=NOW + timedelta(minutes=5), now=NOW).expires == NOW + timedelta(minutes=5)
    assert plan(countdown=10, expires=11, now=NOW).expires == NOW + timedelta(seconds=11)


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"countdown": 5, "eta": NOW}, ValueError, "countdown or eta, not both"),
        ({"countdown": -1}, ValueError, "-1"),
        ({"countdown": float("nan")}, ValueError, "nan"),
        ({"countdown": float("inf")}, ValueError, "inf"),
        ({"countdown": "5"}, TypeError, "'5'"),
        ({"countdown": True}, TypeError, "True"),
        ({"countdown": MAX_DELAY + 1}, ValueError, "longest delay"),
        ({"eta": "2030-01-01"}, TypeError, "'2030-01-01'"),
        ({"eta": 1234.5}, TypeError, "1234.5"),
        ({"expires": -3}, ValueError, "-3"),
        ({"expires": "soon"}, TypeError, "'soon'"),
        ({"countdown": 10, "expires": 10}, ValueError, "could never run"),
        ({"eta": NOW + timedelta(seconds=5), "expires": NOW}, ValueError, "could never run"),
    ],
)
def test_bad_send_options_raise_naming_the_value(options: dict, error: type[Exception], named: str):
    with pytest.raises(error, match=named.replace("(", r"\(")):
        plan(**options, now=NOW)


def test_a_bad_option_records_and_sends_nothing(app: App):
    @app.task(name="delays.noop")
    def noop() -> None:
        return None

    for options in ({"countdown": -1}, {"eta": "tomorrow"}, {"countdown": 1, "eta": NOW}, {"expires": -1}):
        with pytest.raises((ValueError, TypeError)):
            noop.send(**options)
        with pytest.raises((ValueError, TypeError)):
            app.send_many("delays.noop", [((), {})] * 3, **options)
    assert app.backend.query(TaskQuery()).total == 0
    broker = app.broker
    assert isinstance(broker, MemoryBroker) and broker.depth() == 0 and broker.delayed() == 0


def test_every_send_entry_point_takes_the_options(app: App):
    @app.task(name="delays.add")
    def add(a: int, b: int) -> int:
        return a + b

    later = datetime.now(UTC) + timedelta(hours=1)
    results = [
        add.send(args=(1, 2), countdown=3600),
        add.apply_async((1, 2), task_id="chosen", eta=later, expires=7200),
        app.send_task("delays.add", args=(1, 2), countdown=3600, expires=later + timedelta(seconds=1)),
        *app.send_many("delays.add", [((1, 2), {})] * 2, eta=later),
        *add.send_many([(1, 2)], countdown=3600),
    ]
    records = [r.record() for r in results]
    assert all(r.eta is not None and r.eta >= later - timedelta(seconds=5) for r in records)
    assert records[1].task_id == "chosen" and records[1].eta == later
    assert records[1].expires is not None and records[2].expires == later + timedelta(seconds=1)
    assert isinstance(app.broker, MemoryBroker) and app.broker.delayed() == 6


# The ladder's arithmetic


@pytest.mark.parametrize(("seconds", "exact"), [(0.0, 0), (-5.0, 0), (0.001, 1), (1.0, 1), (2.5, 3), (3599.2, 3600)])
def test_a_delay_is_whole_seconds_rounded_up(seconds: float, exact: int):
    now = 1_000_000.0
    assert whole_seconds_until(datetime.fromtimestamp(now + seconds, UTC), now) == exact


def test_a_due_message_goes_straight_to_its_queue():
    assert route("high_priority_queue_0", None) == ("", "high_priority_queue_0")
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert route("low_priority_queue_1", past) == ("", "low_priority_queue_1")


def test_a_delayed_message_enters_the_level_of_its_highest_bit():
    now = 1_000_000.0
    exchange, key = route("high_priority_queue_0", datetime.fromtimestamp(now + 4.2, UTC), now)
    assert exchange == level_name(2)  # 5 s = 0b101
    assert key == "0." * 25 + "1.0.1.high_priority_queue_0"
    assert delay_routing_key(MAX_DELAY, "q") == "1." * LEVELS + "q"


def ladder_wait(seconds: int) -> int:
    """Follow a message through the ladder by its binding patterns (as RabbitMQ's topic exchanges do):
    the TTL of each queue it waits in, until it reaches the delivery exchange."""
    key = delay_routing_key(seconds, "high_priority_queue_0")
    exchange, waited = level_name(seconds.bit_length() - 1), 0
    while exchange != DELIVERY_EXCHANGE:
        level = int(exchange.rsplit(".", 1)[1])
        into_queue, onward = level_bindings(level)
        lower = level_name(level - 1) if level > 0 else DELIVERY_EXCHANGE
        if topic_match(into_queue, key):
            waited += level_arguments(level, "classic")["x-message-ttl"] // 1000
            exchange = level_arguments(level, "classic")["x-dead-letter-exchange"]
        else:
            assert topic_match(onward, key)
            exchange = lower
    assert key.rsplit(".", 1)[1] == "high_priority_queue_0"  # what the delivery exchange routes on
    return waited


def topic_match(pattern: str, key: str) -> bool:
    """AMQP topic matching for the patterns the ladder uses: ``*`` one word, a trailing ``#`` the rest."""
    assert pattern.endswith(".#")
    words, keys = pattern[:-2].split("."), key.split(".")
    return len(keys) >= len(words) and all(fnmatch.fnmatchcase(k, w) for w, k in zip(words, keys, strict=False))


@pytest.mark.parametrize("seconds", [1, 2, 3, 5, 60, 61, 3600, 86_399, 2**27, MAX_DELAY])
def test_every_delay_waits_exactly_its_seconds_in_the_ladder(seconds: int):
    assert ladder_wait(seconds) == seconds


def test_level_queue_arguments():
    assert level_arguments(3, "classic") == {
        "x-message-ttl": 8000,
        "x-dead-letter-exchange": "cogman.delay.2",
        "x-queue-mode": "lazy",
    }
    assert level_arguments(0, "quorum") == {
        "x-message-ttl": 1000,
        "x-dead-letter-exchange": DELIVERY_EXCHANGE,
        "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


# Messages carry the moments


def test_a_message_carries_eta_and_expires_on_the_wire():
    eta, expires = NOW + timedelta(seconds=1, microseconds=5), NOW + timedelta(hours=2)
    message = Message("t1", "n", "t1", Priority.HIGH, eta=eta, expires=expires)
    decoded = Message.decode(message.encode(), message.headers)
    assert (decoded.eta, decoded.expires) == (eta, expires)
    plain = Message("t2", "n", "t2", Priority.HIGH)
    assert b"eta" not in plain.encode() and Message.decode(plain.encode(), plain.headers).eta is None


# The memory broker


def delayed_message(task_id: str, eta: datetime) -> Message:
    return Message(task_id, "delays.t", task_id, Priority.HIGH, eta=eta)


def test_memory_broker_hands_out_only_due_messages_in_eta_order():
    broker = MemoryBroker()
    now = datetime.now(UTC)
    broker.publish([delayed_message("later", now + timedelta(hours=1)), delayed_message("soon", now)])
    broker.publish([delayed_message("hour", now + timedelta(minutes=59))])
    consumer = broker.consume([Priority.HIGH], prefetch=1)
    first = consumer.receive(0)
    assert first is not None and first.headers["TaskID"] == "soon"
    assert consumer.receive(0) is None
    assert (broker.depth(), broker.delayed()) == (0, 2)
    assert broker.next_due() is not None and 3000 < broker.next_due() <= 59 * 60  # type: ignore[operator]
    delayed = [q for q in broker.queue_stats() if q.kind == "delayed"]
    assert [(q.name, q.ready) for q in delayed] == [("cogman.delay", 2)]
    assert QueueReport(broker.queue_stats()).total_ready == 0  # delayed tasks wait for no worker


def test_memory_receive_wakes_when_the_earliest_delayed_message_is_due():
    """A receive with a long timeout returns the delayed message once due (not before, not at its own
    timeout), also when the message was published after the receive began to wait."""
    broker = MemoryBroker()
    consumer = broker.consume([Priority.HIGH, Priority.LOW], prefetch=1)
    got: list[tuple[str, float]] = []

    def receive() -> None:
        delivery = consumer.receive(60)
        got.append((delivery.headers["TaskID"] if delivery else "none", time.time()))

    waiter = threading.Thread(target=receive)
    waiter.start()
    due = datetime.now(UTC) + timedelta(seconds=0.3)
    broker.publish([delayed_message("far", due + timedelta(hours=1)), delayed_message("near", due)])
    waiter.join(timeout=20)
    assert not waiter.is_alive(), "receive slept through the delayed message's eta"
    assert got[0][0] == "near" and got[0][1] >= due.timestamp()


def test_a_delayed_message_waits_for_a_consumer_of_its_family():
    broker = MemoryBroker()
    low = Message("low-1", "delays.t", "low-1", Priority.LOW, eta=datetime.now(UTC) + timedelta(seconds=0.1))
    broker.publish([low])
    high_only = broker.consume([Priority.HIGH], prefetch=1)
    assert high_only.receive(0.3) is None
    delivery = broker.consume([Priority.LOW], prefetch=1).receive(5)
    assert delivery is not None and delivery.headers["TaskID"] == "low-1"


# A worker on the memory broker


def started(record: TaskRecord) -> datetime:
    return next(moment for status, moment in record.history if status is Status.IN_PROGRESS)


def test_memory_worker_runs_a_countdown_no_earlier_than_asked(app: App):
    @app.task(name="delays.mem")
    def mem(index: int) -> int:
        return index

    worker = app.start_background(concurrency=2)
    try:
        before = datetime.now(UTC)
        results = [mem.send(args=(index,), countdown=0.2 * index) for index in range(4)]
        assert [r.get(timeout=30) for r in results] == [0, 1, 2, 3]
        for index, result in enumerate(results):
            assert started(result.record()) >= before + timedelta(seconds=0.2 * index)
    finally:
        worker.stop()


def test_memory_early_delivery_goes_back_to_wait(app: App):
    """A foreign producer's message due later, put straight into a queue: the worker sends it back to
    the broker's delay instead of running it (or holding it)."""

    @app.task(name="delays.mem_foreign")
    def mem_foreign() -> str:
        return "on time"

    eta = datetime.now(UTC) + timedelta(seconds=0.5)
    record = new_record("delays.mem_foreign", (), {}, priority=Priority.HIGH, retry=0, primary_key=None, eta=eta)
    app.backend.create([record])
    broker = app.broker
    assert isinstance(broker, MemoryBroker)
    message = Message.for_record(record, retries_left=0)
    broker.put(message.encode(), message.headers, Priority.HIGH)  # no due: ready at once
    worker = app.start_background(concurrency=1)
    try:
        assert app.result(record.task_id).get(timeout=30) == "on time"
        assert started(app.backend.get(record.task_id)) >= eta  # type: ignore[arg-type]
        assert worker.outcomes[Outcome.DELAYED] == 1
    finally:
        worker.stop()


def test_eager_mode_waits_for_a_delayed_retry():
    app = App("eager", broker="memory://", backend="memory://", eager=True)

    @app.task(name="delays.eager_flaky", retry=1, retry_backoff=0.3, bind=True)
    def eager_flaky(ctx: TaskContext) -> int:
        if ctx.attempt == 1:
            raise ConnectionError("once")
        return ctx.attempt

    try:
        result = eager_flaky.delay()
        assert result.status is Status.SUCCESS and result.get(timeout=0) == 2
        retry = result.latest()
        assert retry.eta is not None and started(retry) >= retry.eta
    finally:
        app.close()


def test_a_manual_retry_of_an_expired_task_has_no_expiry(app: App):
    @app.task(name="delays.mem_perishable")
    def mem_perishable() -> str:
        return "ran"

    expired = mem_perishable.send(expires=datetime.now(UTC) + timedelta(milliseconds=50))
    deadline = expired.record().expires
    assert deadline is not None
    while datetime.now(UTC) <= deadline:  # the expiry passing is what is waited for
        time.sleep(0.01)
    worker = app.start_background(concurrency=1)
    try:
        with pytest.raises(TaskFailed, match="expired"):
            expired.get(timeout=30)
        attempt = retry_task(app, expired.id)
        assert attempt.expires is None
        assert expired.get(timeout=30) == "ran"
    finally:
        worker.stop()
