"""Cogman's RabbitMQ topology: queue names, their arguments, and declaring them once per connection.

The names and arguments are the Go seed system's, so operators recognise the queues and a mixed fleet
can share them: ``high_priority_queue_N`` with ``x-queue-mode: default`` and ``low_priority_queue_N``
with ``x-queue-mode: lazy``, durable, on the default exchange (routing key = queue name), plus the
delay ladder of ``brokers/rabbitmq/delay_ladder.py`` (``declare_delays``). With ``Config.queue_prefix`` every one
of these names is behind the prefix (``shop.high_priority_queue_0``), so apps sharing a vhost stay apart;
a worker still warns when another app consumes its queues (``heartbeat.py``). RabbitMQ refuses (406
PRECONDITION_FAILED) to re-declare a queue with other arguments; that is a configuration mistake an
operator must fix, so it becomes one clear :class:`TopologyError`, never a retry loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amqp.exceptions import AccessRefused, PreconditionFailed

from cogman.brokers.base import DEAD_LETTER_QUEUE, prefixed, queue_names
from cogman.brokers.rabbitmq.connection import kombu
from cogman.brokers.rabbitmq.delay_ladder import (
    PREFIX,
    delivery_exchange,
    level_arguments,
    level_bindings,
    level_name,
    route,
    unroutable_exchange,
)
from cogman.delays import LEVELS
from cogman.errors import TopologyError
from cogman.priority import Priority

if TYPE_CHECKING:
    from datetime import datetime

    from cogman.config.settings import Config

log = logging.getLogger("cogman.rabbitmq")

#: The default exchange: routing key = queue name, nothing to declare or bind.
DEFAULT_EXCHANGE = kombu.Exchange("", type="direct")

QUEUE_MODE = {Priority.HIGH: "default", Priority.LOW: "lazy"}


#: ``x-delivery-limit`` of quorum task queues for ``Config.max_redeliveries``' default (5).
DEFAULT_DELIVERY_LIMIT = 6


def delivery_limit(max_redeliveries: int) -> int:
    """A quorum queue's ``x-delivery-limit``: RabbitMQ hands a message out ``limit + 1`` times. The
    worker itself refuses to run the delivery that comes after ``max_redeliveries + 1`` starts (it
    records why and dead-letters it), so that delivery must still come: one more than the starts."""
    return max_redeliveries + 1


def queue_arguments(
    priority: Priority | None, queue_type: str, limit: int = DEFAULT_DELIVERY_LIMIT, prefix: str = ""
) -> dict[str, Any]:
    """``x-`` arguments for one of Cogman's queues; ``priority`` None means the dead-letter queue.

    Quorum queues are replicated and always keep messages on disk, so lazy mode does not apply. A quorum
    task queue has an explicit ``x-delivery-limit`` (RabbitMQ 4 would default it to 20) and dead-letters
    past it into ``cogman.dead_letter`` (without a dead-letter exchange RabbitMQ drops the message),
    at-least-once, which RabbitMQ allows only with ``reject-publish`` overflow. The dead-letter queue has
    neither: nothing consumes it to return messages, and it must not dead-letter into itself.
    """
    if queue_type == "quorum":
        if priority is None:
            return {"x-queue-type": "quorum"}
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": prefixed(prefix, DEAD_LETTER_QUEUE),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    if priority is None:
        return {}
    return {"x-queue-mode": QUEUE_MODE[priority]}


@dataclass(frozen=True)
class Topology:
    """Every queue a client publishes to or a worker consumes from, with its arguments."""

    high_count: int = 1
    low_count: int = 1
    queue_type: str = "classic"
    #: ``Config.queue_prefix``: in front of every name below; empty: Cogman's names.
    prefix: str = ""
    #: ``x-delivery-limit`` of quorum task queues (``delivery_limit(Config.max_redeliveries)``).
    limit: int = DEFAULT_DELIVERY_LIMIT

    @classmethod
    def of(cls, config: Config) -> Topology:
        return cls(config.high_priority_queue_count, config.low_priority_queue_count, config.queue_type,
                   config.queue_prefix, delivery_limit(config.max_redeliveries))  # fmt: skip

    def names(self, priority: Priority) -> list[str]:
        return queue_names(priority, self.high_count if priority is Priority.HIGH else self.low_count, self.prefix)

    def level_name(self, level: int) -> str:
        """The exchange and the queue of one level of this app's delay ladder."""
        return level_name(level, self.prefix)

    def route(self, queue: str, eta: datetime | None) -> tuple[str, str]:
        """(exchange, routing key) for a message to ``queue`` due at ``eta``, through this app's ladder."""
        return route(queue, eta, prefix=self.prefix)

    def queue(self, name: str, priority: Priority | None) -> Any:
        """A kombu Queue on the default exchange (routing key = name), durable, never auto-deleted."""
        return kombu.Queue(
            name,
            exchange=DEFAULT_EXCHANGE,
            routing_key=name,
            durable=True,
            exclusive=False,
            auto_delete=False,
            queue_arguments=queue_arguments(priority, self.queue_type, self.limit, self.prefix),
        )

    def queues(self, priorities: Iterable[Priority] = (Priority.HIGH, Priority.LOW)) -> list[tuple[Any, Priority]]:
        return [(self.queue(name, p), p) for p in priorities for name in self.names(p)]

    def dead_letter_queue(self) -> Any:
        return self.queue(prefixed(self.prefix, DEAD_LETTER_QUEUE), None)

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

    def declare_delays(
        self, connection: Any, priorities: Iterable[Priority] = (Priority.HIGH, Priority.LOW), *, ladder: bool
    ) -> None:
        """The delay ladder (``ladder``: publishing connections) and its exit, on a channel of their own,
        after ``declare``. Everything is sent without waiting for each reply (``nowait``), then one
        declare waits: about 115 declares and bindings for one round trip. RabbitMQ refuses one by
        closing the channel, and that last declare raises the refusal.

        The exit (the delivery exchange, its alternate exchange into the dead-letter queue, a binding
        per task queue) is cheap, so consumers declare it too: a queue deleted and declared again gets
        its binding back at once. A user without the permissions for it gets a warning, not an error:
        its plain tasks go as before, and RabbitMQ refuses a delayed one it publishes, alone, if the
        ladder is not there. Raises TopologyError for a ladder declared with other arguments."""
        channel = connection.channel()
        try:
            self._declare_exit(channel, [name for priority in priorities for name in self.names(priority)])
            if ladder:
                self._declare_ladder(channel)
            channel.exchange_declare(delivery_exchange(self.prefix), "topic", passive=True)
        except PreconditionFailed as exc:
            raise ladder_error(exc, self.prefix) from None
        except AccessRefused as exc:
            log.warning("cannot declare cogman's delay ladder (%s); delayed tasks need it declared", exc.reply_text)
        finally:
            if channel.is_open:
                channel.close()

    def _declare_exit(self, channel: Any, queue_names: list[str]) -> None:
        deliver, unroutable = delivery_exchange(self.prefix), unroutable_exchange(self.prefix)
        channel.exchange_declare(unroutable, "fanout", durable=True, auto_delete=False, nowait=True)
        channel.queue_bind(self.dead_letter_queue().name, unroutable, routing_key="", nowait=True)
        arguments = {"alternate-exchange": unroutable}
        channel.exchange_declare(deliver, "topic", durable=True, auto_delete=False, arguments=arguments, nowait=True)
        for name in queue_names:
            channel.queue_bind(name, deliver, routing_key=f"#.{name}", nowait=True)

    def _declare_ladder(self, channel: Any) -> None:
        for level in reversed(range(LEVELS)):
            name = self.level_name(level)
            into_queue, _ = level_bindings(level)
            channel.exchange_declare(name, "topic", durable=True, auto_delete=False, nowait=True)
            arguments = level_arguments(level, self.queue_type, self.prefix)
            channel.queue_declare(name, durable=True, auto_delete=False, arguments=arguments, nowait=True)
            channel.queue_bind(name, name, routing_key=into_queue, nowait=True)
        for level in reversed(range(LEVELS)):
            _, onward = level_bindings(level)
            lower = self.level_name(level - 1) if level > 0 else delivery_exchange(self.prefix)
            channel.exchange_bind(lower, self.level_name(level), routing_key=onward, nowait=True)


def ladder_error(exc: PreconditionFailed, prefix: str = "") -> TopologyError:
    ladder = prefixed(prefix, PREFIX)
    return TopologyError(
        f"RabbitMQ refused to declare cogman's delay ladder ({exc.reply_text}): a {ladder}.* queue or exchange "
        f"exists with other arguments, e.g. from another queue_type. Set queue_type to match, or delete the "
        f"{ladder}.* queues and exchanges; their messages are delayed tasks, so only once they are empty."
    )


def mismatch_error(queue: Any, exc: PreconditionFailed) -> TopologyError:
    """A 406 from RabbitMQ, turned into an error that says which queue and what to do about it."""
    wanted = dict(queue.queue_arguments or {})
    return TopologyError(
        f"RabbitMQ refused to declare queue {queue.name!r}: it already exists with other arguments "
        f"({exc.reply_text}). cogman declares it durable with arguments {wanted}. Either delete the "
        f"queue (rabbitmqctl delete_queue {queue.name}) once it is drained, or set queue_type (and, for a "
        f"quorum queue, max_redeliveries: x-delivery-limit is max_redeliveries + 1) to match how it was "
        f"created."
    )
