"""RabbitMQ broker on kombu: Cogman's topology, confirmed publishing with an offline outbox, and
consumers that survive broker restarts.

The work is split by direction: ``publisher.py`` (confirmed sends; its phases in ``publisher_state.py``,
its link in ``publish_link.py``, the outbox in ``outbox.py``, the reconnecting ``flusher.py``),
``rabbitmq_consumer.py`` (one I/O thread per consumer, acks from any thread, reconnect), with
``topology.py`` (queues and their arguments) and ``connection.py`` (dialling, backoff, confirm
bookkeeping) shared. docs/reliability.md says what each fault does and what was measured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import amqp.exceptions

from cogman.brokers.base import Delivery, PublishListener, QueueStats, Receipt
from cogman.brokers.rabbitmq.connection import CONNECTION_ERRORS, close_quietly, dial
from cogman.brokers.rabbitmq.consumer import RabbitMQConsumer, delivery_from
from cogman.brokers.rabbitmq.publisher import Publisher
from cogman.brokers.rabbitmq.topology import Topology
from cogman.config.settings import Config
from cogman.delays import LEVELS
from cogman.errors import BrokerUnavailable
from cogman.message import Message
from cogman.priority import Priority

T = TypeVar("T")


class RabbitMQBroker:
    """``amqp://user:password@host:5672/vhost``. Connects lazily: creating one never blocks or raises.

    One publishing connection per broker (shared by every thread of the process that sends), and one
    connection per consumer, so a slow consumer never holds up a publish and the other way round.
    """

    def __init__(self, url: str, config: Config) -> None:
        self.url = url
        self.config = config
        self.topology = Topology.of(config)
        self.publisher = Publisher(url, config, self.topology)

    def __repr__(self) -> str:
        return f"<RabbitMQBroker {self.url.split('@')[-1]} pending={self.pending()}>"

    def set_listener(self, listener: PublishListener) -> None:
        self.publisher.set_listener(listener)

    def publish(self, messages: Sequence[Message], *, wait: bool = True) -> Receipt:
        return self.publisher.publish(messages, wait=wait)

    def publish_each(self, messages: Sequence[Message], receipts: Sequence[Receipt]) -> None:
        self.publisher.publish_each(messages, receipts)

    def unconfirmed_ids(self) -> list[str]:
        """Task ids of the messages ``pending`` counts (a copy taken under the publisher's lock)."""
        return self.publisher.unconfirmed_ids()

    def pending(self) -> int:
        """Messages accepted by ``publish`` and not yet confirmed by the broker (the outbox and in flight)."""
        return self.publisher.pending()

    def consume(self, priorities: Iterable[Priority], prefetch: int) -> RabbitMQConsumer:
        return RabbitMQConsumer(self.url, self.config, self.topology, tuple(priorities), prefetch)

    def dead_letters(self) -> list[Delivery]:
        """Every message in ``cogman.dead_letter``, read without ack and given back when the channel closes."""
        connection = dial(self.url, timeout=max(1.0, self.config.request_timeout))
        try:
            channel = connection.channel()
            channel.auto_decode = False
            queue = self.topology.dead_letter_queue()(channel)
            queue.declare()
            _, count, _ = queue.queue_declare(passive=True)
            found = []
            for _ in range(count):
                message = queue.get(no_ack=False, accept=None)
                if message is None:
                    break
                found.append(delivery_from(message, queue.name, Priority.HIGH, None))
            return found
        finally:
            close_quietly(connection)

    def close(self) -> None:
        """Drain the outbox (up to ``close_timeout``, reconnecting if need be), then release the publishing
        connection; what stays unconfirmed is logged and keeps its record ``initiated``."""
        self.publisher.close()

    # Operator views and actions

    def queue_stats(self) -> list[QueueStats]:
        """Passive declares on a fresh connection: a queue that is missing costs its channel (RabbitMQ
        closes it with 404), so the next queue gets a new one. The delay ladder's levels are reported
        as ``delayed``: their messages are tasks waiting for their ``eta``."""
        queues: list[tuple[str, str]] = [(q.name, p.value) for q, p in self.topology.queues()]
        queues.append((self.topology.dead_letter_queue().name, "dead_letter"))
        queues += [(self.topology.level_name(level), "delayed") for level in range(LEVELS)]

        def read(connection: Any) -> list[QueueStats]:
            stats = []
            channel = connection.channel()
            for name, kind in queues:
                try:
                    _, ready, consumers = channel.queue_declare(name, passive=True)
                except amqp.exceptions.NotFound:
                    stats.append(QueueStats(name, kind, 0, 0, exists=False))
                    channel = connection.channel()
                    continue
                stats.append(QueueStats(name, kind, int(ready), int(consumers)))
            return stats

        return self._with_connection(read, "read the queue depths")

    def purge(self, settle: Callable[[list[Delivery]], None], batch: int = 500) -> int:
        """basic.get without ack, ``settle`` a batch, then ack it with one multiple ack."""

        def drain(connection: Any) -> int:
            removed = 0
            channel = connection.channel()
            channel.auto_decode = False
            for queue, priority in self.topology.queues():
                try:
                    _, waiting, _ = channel.queue_declare(queue.name, passive=True)
                except amqp.exceptions.NotFound:
                    channel = connection.channel()
                    channel.auto_decode = False
                    continue
                bound = queue(channel)
                while waiting > 0:
                    messages = []
                    for _ in range(min(batch, waiting)):
                        message = bound.get(no_ack=False, accept=None)
                        if message is None:
                            break
                        messages.append(message)
                    if not messages:
                        break
                    settle([delivery_from(m, queue.name, priority, None) for m in messages])
                    channel.basic_ack(messages[-1].delivery_tag, multiple=True)
                    waiting -= len(messages)
                    removed += len(messages)
            return removed

        return self._with_connection(drain, "purge the task queues")

    def _with_connection(self, use: Callable[[Any], T], what: str) -> T:
        """One short-lived connection for an operator's call; an unreachable broker is BrokerUnavailable."""
        connection = None
        try:
            connection = dial(self.url, timeout=max(1.0, self.config.request_timeout))
            return use(connection)
        except CONNECTION_ERRORS as exc:
            where = self.url.split("@")[-1]
            raise BrokerUnavailable(f"RabbitMQ at {where} unreachable while trying to {what}: {exc}") from exc
        finally:
            close_quietly(connection)
