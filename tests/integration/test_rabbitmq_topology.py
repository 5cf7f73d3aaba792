"""The RabbitMQ broker's wire contract, against the real broker: Cogman's queues and their arguments,
round robin, message properties, confirms, prefetch per consumer, dead-lettering, a clear error for a
queue declared with other arguments, and quorum queues.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from kombu import Connection

from cogman import App, Status
from cogman.brokers.base import DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON
from cogman.brokers.rabbitmq.broker import RabbitMQBroker
from cogman.config.settings import Config
from cogman.errors import TopologyError
from cogman.message import Message
from cogman.priority import Priority
from tests.integration.rabbit_helpers import LADDER_QUEUES, depth, list_queues, wait_for


class Recorder:
    """A PublishListener that remembers what it was told."""

    def __init__(self) -> None:
        self.confirmed: list[Message] = []
        self.abandoned: list[tuple[Message, str]] = []
        self._lock = threading.Lock()

    def confirmed_ids(self) -> list[str]:
        with self._lock:
            return [m.task_id for m in self.confirmed]

    def confirmed_(self, messages: Sequence[Message]) -> None:
        with self._lock:
            self.confirmed.extend(messages)

    def abandoned_(self, messages: Sequence[Message], reason: str) -> None:
        with self._lock:
            self.abandoned.extend((m, reason) for m in messages)


class Listener:
    def __init__(self, recorder: Recorder) -> None:
        self.confirmed = recorder.confirmed_
        self.abandoned = recorder.abandoned_


def message(priority: Priority, index: int = 0, name: str = "topology.t") -> Message:
    task_id = str(uuid.uuid4())
    return Message(task_id=task_id, name=name, original_task_id=task_id, priority=priority, args=(index,))


@pytest.fixture
def make_broker(rabbit: str) -> Callable[..., tuple[RabbitMQBroker, Recorder]]:
    brokers: list[RabbitMQBroker] = []

    def make(**options: object) -> tuple[RabbitMQBroker, Recorder]:
        config = Config(broker_url=rabbit, backend_url="memory://").with_options(**options)
        broker = RabbitMQBroker(rabbit, config)
        recorder = Recorder()
        broker.set_listener(Listener(recorder))
        brokers.append(broker)
        return broker, recorder

    yield make
    for broker in brokers:
        broker.close()


def without_ladder(queues: dict[str, Any]) -> dict[str, Any]:
    """The task queues and the dead-letter queue (the delay ladder is tested in test_delays_rabbitmq.py)."""
    return {name: queue for name, queue in queues.items() if name not in LADDER_QUEUES}


def test_declares_cogman_queues_with_their_arguments(make_broker: Callable[..., tuple[RabbitMQBroker, Recorder]]):
    broker, _ = make_broker(high_priority_queue_count=3, low_priority_queue_count=2)

    broker.publish([message(Priority.HIGH)])

    queues = without_ladder(list_queues())
    assert sorted(queues) == sorted(
        [
            "high_priority_queue_0",
            "high_priority_queue_1",
            "high_priority_queue_2",
            "low_priority_queue_0",
            "low_priority_queue_1",
            DEAD_LETTER_QUEUE,
        ]
    )
    for name, queue in queues.items():
        assert (queue["durable"], queue["auto_delete"], queue["exclusive"], queue["type"]) == (
            True,
            False,
            False,
            "classic",
        ), name
    assert all(queues[f"high_priority_queue_{i}"]["arguments"] == {"x-queue-mode": "default"} for i in range(3))
    assert all(queues[f"low_priority_queue_{i}"]["arguments"] == {"x-queue-mode": "lazy"} for i in range(2))
    assert queues[DEAD_LETTER_QUEUE]["arguments"] == {}


def test_round_robin_properties_and_confirms(rabbit: str, make_broker: Callable[..., tuple[RabbitMQBroker, Recorder]]):
    broker, recorder = make_broker(high_priority_queue_count=3, low_priority_queue_count=2)
    highs = [message(Priority.HIGH, i) for i in range(7)]
    lows = [message(Priority.LOW, i) for i in range(5)]

    broker.publish(highs[:4] + lows[:2])  # one pipelined batch, both families mixed
    broker.publish(highs[4:] + lows[2:])

    assert sorted(recorder.confirmed_ids()) == sorted(m.task_id for m in highs + lows)
    assert recorder.abandoned == []
    assert broker.pending() == 0
    seen: dict[str, list[str]] = {}
    with Connection(rabbit) as connection:
        channel = connection.channel()
        channel.auto_decode = False
        for name in [f"high_priority_queue_{i}" for i in range(3)] + [f"low_priority_queue_{i}" for i in range(2)]:
            while (raw := channel.basic_get(name, no_ack=True)) is not None:
                props = raw.properties
                assert props["delivery_mode"] == 2
                assert props["content_type"] == "application/json"
                headers = props["application_headers"]
                assert set(headers) == {"TaskName", "TaskID"}
                assert props["message_id"] == headers["TaskID"]
                decoded = Message.decode(raw.body, headers)
                assert decoded.name == "topology.t"
                assert raw.delivery_info["exchange"] == ""
                assert raw.delivery_info["routing_key"] == name
                seen.setdefault(name, []).append(decoded.task_id)
    # Round robin per priority: the i-th high goes to queue i % 3, the i-th low to queue i % 2.
    for i, m in enumerate(highs):
        assert m.task_id in seen[f"high_priority_queue_{i % 3}"]
    for i, m in enumerate(lows):
        assert m.task_id in seen[f"low_priority_queue_{i % 2}"]
    assert Counter({k: len(v) for k, v in seen.items()}) == Counter(
        {"high_priority_queue_0": 3, "high_priority_queue_1": 2, "high_priority_queue_2": 2,
         "low_priority_queue_0": 3, "low_priority_queue_1": 2}
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["recorded", "confirmed"])
def test_records_are_queued_once_the_broker_confirmed_them(rabbit_app: Callable[..., App], mode: str):
    app = rabbit_app(send_mode=mode)

    @app.task(name="topology.noop")
    def noop() -> None:
        return None

    results = [noop.delay() for _ in range(3)] + app.send_many("topology.noop", [((), {})] * 200)
    if mode == "recorded":
        assert all(r.wait_sent(30) for r in results)
    assert Counter(r.status for r in results) == Counter({Status.QUEUED: 203})


def test_queue_with_other_arguments_is_a_clear_error(
    rabbit: str, make_broker: Callable[..., tuple[RabbitMQBroker, Recorder]]
):
    with Connection(rabbit) as connection:  # a foreign declaration: low queue without lazy mode
        connection.channel().queue_declare(
            "low_priority_queue_0", durable=True, auto_delete=False, arguments={"x-queue-mode": "default"}
        )
    broker, recorder = make_broker()
    first, second = message(Priority.LOW), message(Priority.HIGH)

    with pytest.raises(TopologyError) as raised:
        broker.publish([first])
    with pytest.raises(TopologyError):
        broker.publish([second])  # tried again once per send, never a loop
    with pytest.raises(TopologyError) as raised_consume:
        broker.consume([Priority.LOW], prefetch=4)

    for error in (raised.value, raised_consume.value):
        assert "low_priority_queue_0" in str(error)
        assert "x-queue-mode" in str(error)
    assert [(m.task_id, "low_priority_queue_0" in reason) for m, reason in recorder.abandoned] == [
        (first.task_id, True),
        (second.task_id, True),
    ]
    assert recorder.confirmed == []


def test_quorum_queues(make_broker: Callable[..., tuple[RabbitMQBroker, Recorder]]):
    broker, recorder = make_broker(queue_type="quorum")

    broker.publish([message(Priority.HIGH), message(Priority.LOW)])

    queues = without_ladder(list_queues())
    assert sorted(queues) == sorted(["high_priority_queue_0", "low_priority_queue_0", DEAD_LETTER_QUEUE])
    # A task queue has an explicit delivery limit (max_redeliveries 5 + 1) and dead-letters past it into
    # cogman's place, which dead-letters nowhere (tests/integration/test_delivery_limits.py runs them).
    limited = {
        "x-queue-type": "quorum",
        "x-delivery-limit": 6,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    for name, queue in queues.items():
        wanted = {"x-queue-type": "quorum"} if name == DEAD_LETTER_QUEUE else limited
        assert (queue["type"], queue["durable"], queue["arguments"]) == ("quorum", True, wanted)
    assert len(recorder.confirmed) == 2


def test_a_quorum_queue_declared_with_another_delivery_limit_is_a_topology_error(
    make_broker: Callable[..., tuple[RabbitMQBroker, Recorder]],
):
    """x-delivery-limit is a queue argument: a fleet member with another max_redeliveries is refused
    with the fix, not left publishing into queues that count differently."""
    first, _ = make_broker(queue_type="quorum")
    first.publish([message(Priority.HIGH)])
    second, _ = make_broker(queue_type="quorum", max_redeliveries=3)
    with pytest.raises(TopologyError, match="x-delivery-limit is max_redeliveries \\+ 1"):
        second.publish([message(Priority.HIGH)])


def test_prefetch_is_per_consumer_so_high_gets_through_a_low_backlog(
    make_broker: Callable[..., tuple[RabbitMQBroker, Recorder]],
):
    broker, _ = make_broker()
    broker.publish([message(Priority.LOW, i) for i in range(50)])
    consumer = broker.consume(list(Priority), prefetch=5)
    try:
        lows = [consumer.receive(10) for _ in range(5)]
        assert [d.priority if d else None for d in lows] == [Priority.LOW] * 5
        assert consumer.receive(0.3) is None  # 5 unacked lows: the low consumer is full

        highs = [message(Priority.HIGH, i) for i in range(3)]
        broker.publish(highs)
        received = [consumer.receive(10) for _ in range(3)]
        assert [d.headers["TaskID"] if d else None for d in received] == [m.task_id for m in highs]

        assert lows[0] is not None
        consumer.ack(lows[0])
        after_ack = consumer.receive(10)
        assert after_ack is not None and after_ack.priority is Priority.LOW
    finally:
        consumer.close()


def test_receive_hands_out_buffered_high_before_low(
    make_broker: Callable[..., tuple[RabbitMQBroker, Recorder]],
):
    broker, _ = make_broker()
    broker.publish([message(Priority.LOW, i) for i in range(4)])
    broker.publish([message(Priority.HIGH, i) for i in range(4)])
    consumer = broker.consume(list(Priority), prefetch=10)
    try:
        wait_for(lambda: sum(len(b) for b in consumer._buffers.values()) == 8, 10, "8 buffered deliveries")
        order = [d.priority if d else None for d in (consumer.receive(1) for _ in range(8))]
        assert order == [Priority.HIGH] * 4 + [Priority.LOW] * 4
    finally:
        consumer.close()


def test_dead_letter_keeps_body_and_headers_and_the_snapshot_removes_nothing(
    rabbit: str, make_broker: Callable[..., tuple[RabbitMQBroker, Recorder]]
):
    broker, _ = make_broker()
    sent = message(Priority.HIGH, 7)
    broker.publish([sent])
    consumer = broker.consume([Priority.HIGH], prefetch=4)
    try:
        delivery = consumer.receive(10)
        assert delivery is not None and not delivery.redelivered
        consumer.requeue(delivery)
        again = consumer.receive(10)
        assert again is not None and again.redelivered
        consumer.dead_letter(again, "body is not valid JSON: test")
        wait_for(lambda: depth(rabbit, DEAD_LETTER_QUEUE) == 1, 10, "the dead-letter copy")
    finally:
        consumer.close()

    for _ in range(2):  # a snapshot twice: nothing is removed
        letters = broker.dead_letters()
        assert len(letters) == 1
        assert letters[0].body == sent.encode()
        assert letters[0].headers["TaskID"] == sent.task_id
        assert letters[0].headers[HEADER_DEAD_LETTER_REASON] == "body is not valid JSON: test"
        assert letters[0].headers["x-cogman-source-queue"] == "high_priority_queue_0"
    assert depth(rabbit, "high_priority_queue_0") == 0
    assert json.loads(letters[0].body)["args"] == [7]


def test_failover_url_skips_a_dead_node(rabbit: str, rabbit_app: Callable[..., App]):
    dead = rabbit.replace("127.0.0.1:5672", "127.0.0.1:1")  # nothing listens on port 1
    app = rabbit_app(broker=f"{dead};{rabbit}")

    @app.task(name="topology.echo")
    def echo(value: int) -> int:
        return value

    result = echo.delay(5)
    assert result.wait_sent(30) and result.status is Status.QUEUED
    worker = app.start_background(concurrency=1)
    try:
        assert result.get(timeout=30) == 5
    finally:
        worker.stop()
