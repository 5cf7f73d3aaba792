"""When a task stops being run: one that keeps ending without an outcome, because it kills its worker.

A handler that SIGKILLs its process (or runs it out of memory) leaves no outcome and no ack: the broker
hands the message out again, the next worker dies the same way, and so on forever, the record stuck in
``in_progress``. Two counts bound that loop; past either, the worker records the task ``failed`` with
the reason below and dead-letters its message once, instead of running it again:

- the starts the backend counted on the record (``Started.starts``, every queue type): at most
  ``max_redeliveries + 1`` runs;
- on quorum queues, RabbitMQ's own count of the times it got the message back (``x-delivery-count``,
  ``Delivery.returns``), whether or not the task had started; the queue's ``x-delivery-limit``
  (``topology.delivery_limit``) is one above it, so RabbitMQ dead-letters by itself only if this
  refusal too is cut short.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cogman.backends.base import Started
    from cogman.brokers.base import Delivery
    from cogman.config.settings import Config


def looping_reason(delivery: Delivery, started: Started | None, config: Config) -> str | None:
    """Why this delivery must not run (its earlier runs or deliveries ended without an outcome), or None."""
    return looping_after(delivery, None if started is None else started.starts, config)


def looping_after(delivery: Delivery, starts: int | None, config: Config) -> str | None:
    """``looping_reason`` from the count of starts (with this one) alone: a Go-format task's, kept beside
    Go's record (``GoRecords.start``)."""
    limit = config.max_redeliveries
    if starts is not None and starts > limit + 1:
        return (
            f"started {starts - 1} times without an outcome: its worker died each time "
            f"(redelivery limit max_redeliveries={limit})"
        )
    if config.queue_type == "quorum" and delivery.returns > limit:
        return (
            f"delivered {delivery.returns} times without an outcome (x-delivery-count): its worker died or "
            f"gave it back each time (redelivery limit max_redeliveries={limit})"
        )
    return None
