"""Raw kombu senders: persistent JSON messages on the default exchange, with or without confirms.

``confirms=False`` is the ceiling: nothing waits for RabbitMQ. ``confirms=True`` waits for each
message's confirm in ``send``; its ``send_batch`` publishes a whole batch on a confirm-mode channel and
then waits for all of its confirms, the way cogman's ``send_many`` pipelines them.
"""

from __future__ import annotations

from typing import Any

from kombu import Connection, Producer

from bench.settings import AMQP_URL


class KombuSender:
    def __init__(self, queue: str, *, confirms: bool) -> None:
        self.queue = queue
        self._single = Connection(AMQP_URL, transport_options={"confirm_publish": confirms})
        channel = self._single.channel()
        channel.queue_declare(queue=queue, durable=True, auto_delete=False)
        self._producer = Producer(channel, routing_key=queue)
        self._batch: _BatchPublisher | None = _BatchPublisher(queue) if confirms else None

    def send(self, sent_at: float) -> None:
        self._producer.publish({"sent_at": sent_at}, routing_key=self.queue, delivery_mode=2, serializer="json")

    def send_batch(self, count: int) -> None:
        if self._batch is None:
            raise RuntimeError("no batch send without confirms: it would be the same as single sends")
        self._batch.publish(count)

    def close(self) -> None:
        self._single.release()
        if self._batch is not None:
            self._batch.close()


class _BatchPublisher:
    """A confirm-mode channel whose confirms are collected from ``basic.ack`` events, not awaited one by one."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self._connection = Connection(AMQP_URL)
        self._channel = self._connection.channel()
        self._channel.confirm_select()
        self._channel.events["basic_ack"].add(self._on_ack)
        self._channel.events["basic_nack"].add(self._on_nack)
        self._producer = Producer(self._channel, routing_key=queue)
        self._next_tag = 1
        self._pending: set[int] = set()

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._pending = {tag for tag in self._pending if tag > delivery_tag}
        else:
            self._pending.discard(delivery_tag)

    def _on_nack(self, delivery_tag: Any, multiple: bool) -> None:
        raise RuntimeError(f"RabbitMQ refused message {delivery_tag} (multiple={multiple})")

    def publish(self, count: int) -> None:
        for _ in range(count):
            self._pending.add(self._next_tag)
            self._next_tag += 1
            self._producer.publish({"sent_at": 0.0}, routing_key=self.queue, delivery_mode=2, serializer="json")
        while self._pending:
            self._connection.drain_events(timeout=10)

    def close(self) -> None:
        self._connection.release()
