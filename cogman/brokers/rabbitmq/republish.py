"""Moving a delivery by copy: dead letters, and redeliveries that carry their count.

RabbitMQ has no "move": cogman publishes a copy (to ``cogman.dead_letter``, or back to the message's own
queue with ``x-cogman-redeliveries`` raised by one) and acks the source only once RabbitMQ confirmed
the copy. The copy is published ``mandatory``: if no queue takes it (someone deleted the dead-letter
queue), RabbitMQ returns it, the source stays unacked, the dead-letter queue is declared again and the
copy is sent again after a backoff (0.25 s doubling to 5 s), for as long as the connection lives.
A crash between the confirm and the ack leaves both the copy and the source: the source is delivered
again, and the worker dead-letters it again (a second dead letter) or finds its task already final
(a redelivery copy runs once; the other is acked as a duplicate by record status).

Everything here runs on the consumer's I/O thread, on a second channel of its connection, in confirm
mode; nothing blocks it: confirms and returns are handled as they are read.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from amqp.basic_message import Message as RawMessage
from amqp.exceptions import PreconditionFailed

from cogman.brokers.base import HEADER_DEAD_LETTER_REASON, Delivery
from cogman.brokers.rabbitmq.connection import MAX_BACKOFF
from cogman.brokers.rabbitmq.inbound import HEADER_COMPRESSION, HEADER_REDELIVERIES, sanitize_headers, shortstr
from cogman.brokers.rabbitmq.topology import Topology, mismatch_error

log = logging.getLogger("cogman.rabbitmq")

HEADER_SOURCE_QUEUE = "x-cogman-source-queue"
#: Why the message was last given back (``Consumer.redeliver``).
HEADER_REDELIVERY_REASON = "x-cogman-redelivery-reason"
#: Identifies a copy in flight, so a basic.return can be matched to it (returns carry no delivery tag).
HEADER_COPY_ID = "x-cogman-copy-id"
#: The source's ``compression`` header, renamed so that no kombu reader of the copy decompresses it.
HEADER_ORIGINAL_COMPRESSION = "x-cogman-compression"
#: Properties a copy keeps. Not ``user_id`` (RabbitMQ refuses one that is not the publisher's) and not
#: ``expiration`` (a dead letter must not expire).
KEPT_PROPERTIES = ("content_type", "content_encoding", "message_id", "correlation_id", "reply_to", "type", "app_id")
FIRST_RETRY = 0.25


@dataclass(slots=True)
class Copy:
    delivery: Delivery
    routing_key: str
    headers: dict[str, Any]
    attempts: int = 0
    due: float = field(default=0.0)


class Republisher:
    """Publishes copies on ``channel`` (put in confirm mode here) and calls ``on_copied(source)`` once a
    copy is confirmed, so the consumer acks the source."""

    def __init__(self, channel: Any, topology: Topology, on_copied: Callable[[Delivery], None]) -> None:
        self.channel = channel
        self.topology = topology
        self._on_copied = on_copied
        self._next_tag = 1
        self._copy_ids = itertools.count(1)
        self._in_flight: dict[int, tuple[int, Copy]] = {}  # delivery tag -> (copy id, copy)
        self._returned: set[int] = set()
        self._waiting: list[Copy] = []
        #: Copies RabbitMQ returned or refused (each is sent again after a backoff).
        self.failures = 0
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)

    @property
    def pending(self) -> int:
        """Copies not confirmed yet (in flight or waiting to be sent again); their sources are unacked."""
        return len(self._in_flight) + len(self._waiting)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        headers = sanitize_headers(delivery.headers)
        if HEADER_COMPRESSION in headers:
            headers[HEADER_ORIGINAL_COMPRESSION] = headers.pop(HEADER_COMPRESSION)
        headers[HEADER_DEAD_LETTER_REASON] = reason
        headers[HEADER_SOURCE_QUEUE] = delivery.queue
        self._send(Copy(delivery, self.topology.dead_letter_queue().name, headers))

    def redeliver(self, delivery: Delivery, reason: str) -> None:
        headers = sanitize_headers(delivery.headers)
        headers[HEADER_REDELIVERIES] = delivery.redeliveries + 1
        headers[HEADER_REDELIVERY_REASON] = reason
        self._send(Copy(delivery, delivery.queue, headers))

    def send_due(self, now: float) -> float | None:
        """Send again the copies whose backoff is over; returns seconds until the next one is due."""
        if not self._waiting:
            return None
        due = [copy for copy in self._waiting if copy.due <= now]
        if due:
            self._waiting = [copy for copy in self._waiting if copy.due > now]
            dead_letter_queue = self.topology.dead_letter_queue()
            if any(copy.routing_key == dead_letter_queue.name for copy in due):
                try:  # the usual reason for a return: the dead-letter queue was deleted
                    dead_letter_queue(self.channel).declare()
                except PreconditionFailed as exc:
                    raise mismatch_error(dead_letter_queue, exc) from None
            for copy in due:
                self._send(copy)
        return min(copy.due for copy in self._waiting) - now if self._waiting else None

    def _send(self, copy: Copy) -> None:
        copy_id = next(self._copy_ids)
        copy.headers[HEADER_COPY_ID] = copy_id
        source = copy.delivery.properties
        properties = {name: shortstr(source[name]) for name in KEPT_PROPERTIES if source.get(name) is not None}
        for name in ("timestamp", "priority"):
            if isinstance(source.get(name), int):
                properties[name] = source[name]
        message = RawMessage(copy.delivery.body, application_headers=copy.headers, delivery_mode=2, **properties)
        self._in_flight[self._next_tag] = (copy_id, copy)
        self._next_tag += 1
        self.channel.basic_publish(message, exchange="", routing_key=copy.routing_key, mandatory=True)

    def _settle(self, delivery_tag: int, multiple: bool, failure: str | None) -> None:
        tags = [tag for tag in self._in_flight if tag <= delivery_tag] if multiple else [delivery_tag]
        for tag in tags:
            entry = self._in_flight.pop(tag, None)
            if entry is None:
                continue
            copy_id, copy = entry
            if copy_id in self._returned:
                self._returned.discard(copy_id)
                self._retry(copy, f"no queue took it (basic.return): is {copy.routing_key!r} deleted?")
            elif failure is not None:
                self._retry(copy, failure)
            else:
                self._on_copied(copy.delivery)

    def _retry(self, copy: Copy, why: str) -> None:
        self.failures += 1
        copy.attempts += 1
        delay = min(MAX_BACKOFF, FIRST_RETRY * 2 ** (copy.attempts - 1))
        copy.due = time.monotonic() + delay
        self._waiting.append(copy)
        log.warning(
            "copy of a message from %s to %s not taken (%s), attempt %d; the source stays unacked, trying "
            "again in %.2f s",
            copy.delivery.queue, copy.routing_key, why, copy.attempts, delay,
        )  # fmt: skip

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, None)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, "RabbitMQ refused it (basic.nack)")

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        copy_id = ((getattr(message, "properties", None) or {}).get("application_headers") or {}).get(HEADER_COPY_ID)
        if isinstance(copy_id, int):
            self._returned.add(copy_id)
