"""Cogman's RabbitMQ topology: queue names, their arguments, and declaring them once per connection.

The names and arguments are the Go seed system's, so operators recognise the queues and a mixed fleet
can share them: ``high_priority_queue_N`` with ``x-queue-mode: default`` and ``low_priority_queue_N``
with ``x-queue-mode: lazy``, durable, on the default exchange (routing key = queue name). RabbitMQ
refuses (406 PRECONDITION_FAILED) to re-declare a queue with other arguments; that is a configuration
mistake an operator must fix, so it becomes one clear :class:`TopologyError`, never a retry loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from amqp.exceptions import PreconditionFailed

from cogman.brokers.base import DEAD_LETTER_QUEUE, queue_names
from cogman.brokers.connection import kombu
from cogman.errors import TopologyError
from cogman.priority import Priority

#: The default exchange: routing key = queue name, nothing to declare or bind.
DEFAULT_EXCHANGE = kombu.Exchange("", type="direct")

QUEUE_MODE = {Priority.HIGH: "default", Priority.LOW: "lazy"}


def queue_arguments(priority: Priority | None, queue_type: str) -> dict[str, Any]:
    """``x-`` arguments for one of Cogman's queues; ``priority`` None means the dead-letter queue.

    Quorum queues are replicated and always keep messages on disk, so lazy mode does not apply.
    """
    if queue_type == "quorum":
        return {"x-queue-type": "quorum"}
    if priority is None:
        return {}
    return {"x-queue-mode": QUEUE_MODE[priority]}


@dataclass(frozen=True)
class Topology:
    """Every queue a client publishes to or a worker consumes from, with its arguments."""

    high_count: int = 1
    low_count: int = 1
    queue_type: str = "classic"

    def names(self, priority: Priority) -> list[str]:
        return queue_names(priority, self.high_count if priority is Priority.HIGH else self.low_count)

    def queue(self, name: str, priority: Priority | None) -> Any:
        """A kombu Queue on the default exchange (routing key = name), durable, never auto-deleted."""
        return kombu.Queue(
            name,
            exchange=DEFAULT_EXCHANGE,
            routing_key=name,
            durable=True,
            exclusive=False,
            auto_delete=False,
            queue_arguments=queue_arguments(priority, self.queue_type),
        )

    def queues(self, priorities: Iterable[Priority] = (Priority.HIGH, Priority.LOW)) -> list[tuple[Any, Priority]]:
        return [(self.queue(name, p), p) for p in priorities for name in self.names(p)]

    def dead_letter_queue(self) -> Any:
        return self.queue(DEAD_LETTER_QUEUE, None)

    def declare(self, channel: Any, priorities: Iterable[Priority] = (Priority.HIGH, Priority.LOW)) -> None:
        """Declare the queues of ``priorities`` and the dead-letter queue on ``channel``.

        Raises TopologyError when one exists with other arguments. RabbitMQ closes the channel then,
        so the caller must drop it (and, simplest, the connection).
        """
        for queue in [q for q, _ in self.queues(priorities)] + [self.dead_letter_queue()]:
            try:
                queue(channel).declare()
            except PreconditionFailed as exc:
                raise mismatch_error(queue, exc) from None


def mismatch_error(queue: Any, exc: PreconditionFailed) -> TopologyError:
    """A 406 from RabbitMQ, turned into an error that says which queue and what to do about it."""
    wanted = dict(queue.queue_arguments or {})
    return TopologyError(
        f"RabbitMQ refused to declare queue {queue.name!r}: it already exists with other arguments "
        f"({exc.reply_text}). cogman declares it durable with arguments {wanted}. Either delete the "
        f"queue (rabbitmqctl delete_queue {queue.name}) once it is drained, or set queue_type to match "
        f"how it was created."
    )
