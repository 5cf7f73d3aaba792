"""Helpers for the consumer tests: brokers on the test vhost (directly or through a TCP proxy),
messages, raw publishing as a foreign or broken producer would, and reading queue counters."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import amqp
import pytest
from kombu import Connection

from cogman.brokers.rabbitmq.broker import RabbitMQBroker
from cogman.config.settings import Config
from cogman.message import Message
from cogman.priority import Priority
from tests.integration.rabbit_helpers import VHOST, rabbitmqctl

MakeBroker = Callable[..., RabbitMQBroker]


@pytest.fixture
def make_broker(rabbit: str) -> Iterator[MakeBroker]:
    """``make_broker(url=None, **options)``: a RabbitMQBroker on the test vhost (or ``url``), closed after."""
    brokers: list[RabbitMQBroker] = []

    def make(url: str | None = None, **options: Any) -> RabbitMQBroker:
        config = Config(broker_url=url or rabbit, backend_url="memory://").with_options(**options)
        broker = RabbitMQBroker(url or rabbit, config)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


def message(priority: Priority = Priority.HIGH, index: int = 0, name: str = "consuming.t") -> Message:
    task_id = str(uuid.uuid4())
    return Message(task_id=task_id, name=name, original_task_id=task_id, priority=priority, args=(index,))


def task_body(task_id: str, name: str, args: list[Any], **fields: Any) -> bytes:
    """A cogman message body, written by hand (so fields can be made wrong)."""
    data = {"task_id": task_id, "name": name, "original_task_id": task_id, "priority": "high", "args": args}
    data.update(fields)
    return json.dumps(data).encode()


def publish_raw(url: str, queue: str, items: list[tuple[bytes, dict[str, Any]]]) -> None:
    """Publish ``(body, properties)`` pairs with py-amqp, confirmed, byte for byte: ``bytes`` in a short
    string property or a header name go out as they are, valid UTF-8 or not."""
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        for body, properties in items:
            channel.basic_publish_confirm(amqp.Message(body, **properties), exchange="", routing_key=queue)


def unacked(queue: str) -> int:
    """Messages of ``queue`` delivered to a consumer and not acked yet."""
    out = rabbitmqctl("list_queues", "-p", VHOST, "name", "messages_unacknowledged", "--formatter", "json")
    return next((int(row["messages_unacknowledged"]) for row in json.loads(out) if row["name"] == queue), 0)


def queue_exists(url: str, queue: str) -> bool:
    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.channel().queue_declare(queue, passive=True)
        return True
    except amqp.exceptions.NotFound:
        return False


def delete_queue(url: str, queue: str, redeclare_with: dict[str, Any] | None = None) -> None:
    """Delete ``queue`` as an operator would; with ``redeclare_with``, declare it again with those arguments."""
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        channel.queue_delete(queue)
        if redeclare_with is not None:
            channel.queue_declare(queue, durable=True, auto_delete=False, arguments=redeclare_with)
