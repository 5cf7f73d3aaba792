"""The delay ladder: delayed tasks wait in RabbitMQ, in 28 TTL queues, never in a worker's memory.

The NServiceBus / Celery 5.5 "native delayed delivery" topology, with cogman's names. Level ``k``
(0..27) is a topic exchange and a durable queue, both ``cogman.delay.k``; the queue's messages expire
after ``2**k`` seconds (``x-message-ttl``) and are then dead-lettered to the exchange of level
``k - 1`` (level 0: to ``cogman.delay.deliver``). A delay of ``D`` whole seconds is written in the
routing key, bit 27 first, followed by the destination queue::

    D = 5  ->  "0.0.(...).0.1.0.1.high_priority_queue_0"

Exchange ``k`` routes a message whose bit ``k`` is 1 into queue ``k`` (it waits ``2**k`` s there) and
one whose bit is 0 straight on to exchange ``k - 1``. So a message waits only in the levels of the bits
set in ``D``, and leaves level 0 after exactly ``D`` seconds. It is published to the exchange of its
highest set bit (fewer hops). ``cogman.delay.deliver`` routes on the last word of the routing key
(bindings ``#.<queue>``) to the destination queue; a message it cannot route (its queue was deleted)
goes to its alternate exchange and so to ``cogman.dead_letter``, never dropped.

``D`` is rounded up to whole seconds when the message is published, so a task never starts early and
starts at most about a second late; the longest delay is ``2**28 - 1`` s (about 8.5 years).
docs/scheduling.md says why this topology and what it costs. With ``Config.queue_prefix`` every name
here is behind it (``shop.cogman.delay.3``): each app has its own ladder, so the delivery exchange of
one never routes into the queues of another.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cogman.brokers.base import prefixed
from cogman.delays import LEVELS, whole_seconds_until

PREFIX = "cogman.delay"
#: Where level 0 dead-letters to: routes to the destination queue named by the routing key's last word.
DELIVERY_EXCHANGE = f"{PREFIX}.deliver"
#: The delivery exchange's alternate exchange: what it cannot route goes to ``cogman.dead_letter``.
UNROUTABLE_EXCHANGE = f"{PREFIX}.unroutable"


def level_name(level: int, prefix: str = "") -> str:
    """The exchange and the queue of one level."""
    return prefixed(prefix, f"{PREFIX}.{level}")


def delivery_exchange(prefix: str = "") -> str:
    return prefixed(prefix, DELIVERY_EXCHANGE)


def unroutable_exchange(prefix: str = "") -> str:
    return prefixed(prefix, UNROUTABLE_EXCHANGE)


def level_arguments(level: int, queue_type: str, prefix: str = "") -> dict[str, Any]:
    """``x-`` arguments of a level's queue. Quorum queues dead-letter at-least-once (which RabbitMQ
    allows only with ``reject-publish`` overflow); classic ones are lazy, so a large backlog of delayed
    tasks sits on disk rather than in the broker's memory."""
    arguments: dict[str, Any] = {
        "x-message-ttl": 2**level * 1000,
        "x-dead-letter-exchange": level_name(level - 1, prefix) if level > 0 else delivery_exchange(prefix),
    }
    if queue_type == "quorum":
        arguments.update({"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once"})
        arguments["x-overflow"] = "reject-publish"
    else:
        arguments["x-queue-mode"] = "lazy"
    return arguments


def level_bindings(level: int) -> tuple[str, str]:
    """Patterns of exchange ``level``: into its queue (bit set), on to the next lower level (bit clear)."""
    skipped = "*." * (LEVELS - 1 - level)
    return f"{skipped}1.#", f"{skipped}0.#"


def delay_routing_key(seconds: int, queue: str) -> str:
    """``seconds`` as 28 bits, highest first, each a word of the routing key, then ``queue``."""
    return ".".join(f"{seconds:0{LEVELS}b}") + f".{queue}"


def route(queue: str, eta: datetime | None, now: float | None = None, prefix: str = "") -> tuple[str, str]:
    """(exchange, routing key) to publish a message for ``queue`` due at ``eta``, decided now: the
    default exchange when it is due, else the level of its delay's highest bit in ``prefix``'s ladder."""
    seconds = 0 if eta is None else whole_seconds_until(eta, now)
    if seconds <= 0:
        return "", queue
    return level_name(seconds.bit_length() - 1, prefix), delay_routing_key(seconds, queue)
