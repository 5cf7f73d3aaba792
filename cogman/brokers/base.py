"""The broker protocol: what the app and the worker need from a message transport, and nothing more.

A broker publishes with confirms, hands out consumers, and reports asynchronously what happened to the
messages it accepted (``PublishListener``), because a message parked in an offline outbox is confirmed
(or abandoned) long after ``publish`` returned. The memory broker and the RabbitMQ broker both implement
this, so the worker never knows which one it talks to.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cogman.message import Message
from cogman.priority import Priority

DEAD_LETTER_QUEUE = "cogman.dead_letter"
HEADER_DEAD_LETTER_REASON = "x-cogman-dead-letter-reason"


def queue_names(priority: Priority, count: int) -> list[str]:
    """Cogman's queue names: ``high_priority_queue_0..count-1`` or ``low_priority_queue_0..count-1``."""
    return [f"{priority.value}_priority_queue_{index}" for index in range(count)]


@dataclass(slots=True)
class Delivery:
    """One received message, before it is decoded. ``tag`` is the transport's handle for ack/reject."""

    body: bytes
    headers: dict[str, Any]
    queue: str
    priority: Priority
    tag: Any = None
    redelivered: bool = False
    properties: dict[str, Any] = field(default_factory=dict)
    #: How often cogman gave this message back after an unexpected error (``Consumer.redeliver``).
    redeliveries: int = 0
    #: Set by the transport when the delivery can never run (undecodable properties, a ``compression``
    #: header, a body over ``max_message_size``): the worker dead-letters it with this reason.
    poison: str | None = None


class PublishListener(Protocol):
    """Told about messages once their fate is known, and about connections. Called from the broker's
    threads."""

    def connected(self) -> None:
        """The publishing side connected, or reconnected after an outage (re-enqueue runs here)."""

    def confirmed(self, messages: Sequence[Message]) -> None:
        """The broker holds these messages durably."""

    def abandoned(self, messages: Sequence[Message], reason: str) -> None:
        """These messages will never be published (the broker stayed away past connection_timeout)."""


class Consumer(Protocol):
    """Messages from a set of queues. Every method may be called from any thread."""

    def receive(self, timeout: float, priorities: Collection[Priority] | None = None) -> Delivery | None:
        """Next delivery, high priority first when both are waiting; None after ``timeout`` seconds.

        ``priorities`` narrows it to some families: a handler thread about to start a low task asks
        for a waiting high one with ``receive(0, (Priority.HIGH,))``."""

    def ack(self, delivery: Delivery) -> None:
        """The outcome is recorded: remove the message for good."""

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """The message can never run: move it to ``cogman.dead_letter`` with ``reason``, then drop it."""

    def requeue(self, delivery: Delivery) -> None:
        """Give an unstarted message back, so another worker (or this one later) can take it."""

    def close(self) -> None:
        """Stop receiving; messages not yet acked go back to the broker."""


class Broker(Protocol):
    """A message transport with Cogman's two queue families."""

    def set_listener(self, listener: PublishListener) -> None:
        """Where to report confirmed and abandoned messages."""

    def publish(self, messages: Sequence[Message]) -> None:
        """Publish and wait for the confirms (pipelined), or park the messages in an outbox while the
        broker is away. Reports each message to the listener. Raises BrokerUnavailable once the broker
        has been away longer than ``connection_timeout``."""

    def consume(self, priorities: Iterable[Priority], prefetch: int) -> Consumer:
        """A consumer over every queue of the given families. ``prefetch`` bounds the unacked messages
        (running and waiting) the transport may push per family; the worker passes its concurrency plus
        its own prefetch, and bounds the unstarted ones it holds itself."""

    def dead_letters(self) -> list[Delivery]:
        """A snapshot of the dead-letter place, for inspection and tests (nothing is removed)."""

    def close(self) -> None:
        """Release connections; unconfirmed outbox messages stay reported as pending."""
