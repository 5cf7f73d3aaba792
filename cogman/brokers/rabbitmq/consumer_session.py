"""One connection's worth of consuming: dial, declare, consume every queue, and carry out what the
worker decided about each delivery, on the channel it came on.

Only the consumer's I/O thread touches a session. When the connection breaks, the session is thrown
away with its unconfirmed dead-letter copies (their sources were never acked, so RabbitMQ delivers them
again) and a new one, with the next generation number, takes its place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import amqp.exceptions

from cogman.brokers.base import Delivery
from cogman.brokers.rabbitmq.amqp_frames import ack_frames, write_frames
from cogman.brokers.rabbitmq.connection import (
    Connection,
    Waker,
    close_quietly,
    describe,
    dial,
    discard,
    drain_ready,
    wait_readable,
)
from cogman.brokers.rabbitmq.inbound import delivery_from_raw, use_lenient_framing
from cogman.brokers.rabbitmq.republish import Republisher
from cogman.brokers.rabbitmq.topology import Topology
from cogman.config.settings import Config
from cogman.errors import BrokerAccessRefused
from cogman.priority import Priority

log = logging.getLogger("cogman.rabbitmq")


@dataclass(frozen=True, slots=True)
class Tag:
    """A delivery's handle: which connection it came on, and RabbitMQ's delivery tag there."""

    generation: int
    delivery_tag: int


class QueueCancelled(ConnectionError):
    """RabbitMQ cancelled one of our consumers (its queue was deleted): reconnect and declare again."""


class Session:
    """A connection consuming ``priorities``' queues, each with its own basic.consume and prefetch.

    ``take(delivery)`` is called for each delivery as it is read; when it returns False (the consumer
    is cancelled) the delivery goes straight back to RabbitMQ. ``consume=False`` connects without
    consuming (a cancelled consumer that reconnects only to settle nothing new).
    """

    def __init__(
        self,
        url: str,
        config: Config,
        topology: Topology,
        priorities: tuple[Priority, ...],
        prefetch: int,
        generation: int,
        take: Callable[[Delivery], bool],
        consume: bool = True,
    ) -> None:
        self.generation = generation
        self.opened_at = time.monotonic()
        self._take = take
        self._max_size = config.max_message_size
        self._request_timeout = config.request_timeout
        self.connection: Connection = dial(url, timeout=max(1.0, min(config.request_timeout, 10.0)))
        try:
            use_lenient_framing(self.connection.connection)
            self.channel: Any = self.connection.channel()
            self.channel.auto_decode = False  # bodies stay bytes: no copy, and the worker judges bad UTF-8
            topology.declare(self.channel, priorities)
            topology.declare_delays(self.connection, priorities, ladder=False)
            self.channel.basic_qos(prefetch_size=0, prefetch_count=prefetch, a_global=False)
            self.republisher = Republisher(self.connection.channel(), topology, self._copied)
            self.consumer_tags: list[str] = []
            if consume:
                for queue, priority in topology.queues(priorities):
                    on_message = self._on_message_for(queue.name, priority)
                    tag = self.channel.basic_consume(queue.name, callback=on_message, on_cancel=self._on_cancelled)
                    self.consumer_tags.append(tag)
        except amqp.exceptions.AccessRefused as exc:  # a permission on a queue: configuration, not outage
            discard(self.connection)
            raise BrokerAccessRefused(f"RabbitMQ refused {describe(self.connection)}: {exc.reply_text}") from None
        except BaseException:
            discard(self.connection)
            raise

    def owns(self, delivery: Delivery) -> bool:
        tag = delivery.tag
        return isinstance(tag, Tag) and tag.generation == self.generation

    def settle(self, action: str, delivery: Delivery, reason: str) -> None:
        """Carry out one of the worker's decisions other than an ack (``ack_all``); the delivery must be
        this session's."""
        if action == "requeue":
            self.channel.basic_reject(delivery.tag.delivery_tag, requeue=True)
        elif action == "dead_letter":
            self.republisher.dead_letter(delivery, reason)
        elif action == "redeliver":
            self.republisher.redeliver(delivery, reason)
        else:
            raise ValueError(f"unknown consumer action {action!r}")

    def ack_all(self, deliveries: list[Delivery]) -> None:
        """Ack many of this session's deliveries in one socket write: a handler pool finishes tasks in
        bursts, and one py-amqp call (and write) per ack is work on every task's path."""
        frames = ack_frames(self.channel.channel_id, [delivery.tag.delivery_tag for delivery in deliveries])
        write_frames(self.connection.connection, frames)

    def cancel_consumers(self, buffered: list[Delivery]) -> None:
        """basic.cancel each consumer (deliveries in flight meanwhile are refused by ``take`` and go
        back as they arrive), then give back ``buffered``, received but never handed out."""
        for consumer_tag in self.consumer_tags:
            self.channel.basic_cancel(consumer_tag)
        self.consumer_tags = []
        for delivery in buffered:
            if self.owns(delivery):
                self.channel.basic_reject(delivery.tag.delivery_tag, requeue=True)

    def serve(self, waker: Waker, timeout: float) -> None:
        """Wait for the socket, a wake-up, ``timeout`` or the next dead-letter retry; read what arrived."""
        next_due = self.republisher.send_due(time.monotonic())
        if next_due is not None:
            timeout = max(0.0, min(timeout, next_due))
        if wait_readable(self.connection, waker, timeout):
            drain_ready(self.connection)
        self.connection.heartbeat_check()

    def flush(self, waker: Waker) -> None:
        """Wait (up to ``request_timeout``) for the confirms of copies in flight, so their sources are
        acked before the connection closes."""
        deadline = time.monotonic() + self._request_timeout
        while self.republisher.in_flight and time.monotonic() < deadline:
            if wait_readable(self.connection, waker, deadline - time.monotonic()):
                drain_ready(self.connection)
        if self.republisher.pending:
            log.warning("%d dead letter(s) unconfirmed at close; their sources go back", self.republisher.pending)

    def close(self) -> None:
        """Close politely: what is not acked goes back to its queue at once."""
        close_quietly(self.connection)

    def discard(self) -> None:
        discard(self.connection)

    def _on_message_for(self, queue: str, priority: Priority) -> Callable[[Any], None]:
        def on_message(message: Any) -> None:
            tag = Tag(self.generation, message.delivery_tag)
            delivery = delivery_from_raw(message, queue, priority, tag, self._max_size)
            if not self._take(delivery):
                message.channel.basic_reject(message.delivery_tag, requeue=True)
            elif delivery.poison is not None:
                log.warning("undecodable delivery from %s: %s", queue, delivery.poison)

        return on_message

    def _on_cancelled(self, consumer_tag: str) -> None:
        raise QueueCancelled(f"RabbitMQ cancelled consumer {consumer_tag} (its queue was deleted?)")

    def _copied(self, delivery: Delivery) -> None:
        """RabbitMQ confirmed the copy (dead letter or redelivery): now the source can go."""
        if self.owns(delivery):
            self.channel.basic_ack(delivery.tag.delivery_tag)
