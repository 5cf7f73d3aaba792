"""Which deliveries the lean profile runs without writing ``in_progress`` first (docs/guarantees.md).

In the default profile every delivery writes its start and reads the reply before the handler runs:
that reply is how a redelivered or copied message of a task that finished, or of a task cancelled
before it started, is acked unrun. The lean profile (``Config.profile="lean"``) trades that check away
for a message's only copy, handed out for the first time: it was published once (``HEADER_FIRST``, set
by a send with a generated id and cleared once it went out, so an outbox replay, a re-enqueue, a retry
attempt or a workflow's step never carries it) and RabbitMQ has not handed it out before. Its record
goes from ``queued`` to its outcome, and a failure reads its chain from the record. A handler bound to
its context (``bind=True``) reads the chain from the start's reply, so it starts as in the default
profile; so does every other delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cogman.message import HEADER_FIRST

if TYPE_CHECKING:
    from cogman.brokers.base import Delivery
    from cogman.message import Message
    from cogman.task import Task


def runs_first(delivery: Delivery, message: Message, task: Task[Any, Any], profile: str) -> bool:
    """Whether this delivery is its task's only copy, handed out for the first time, to a handler that
    needs nothing from the start's reply."""
    return (
        profile == "lean"
        and delivery.headers.get(HEADER_FIRST) == "1"
        and not delivery.redelivered
        and delivery.returns == 0
        and delivery.redeliveries == 0
        and message.attempt == 1
        and message.original_task_id == message.task_id
        and message.workflow is None
        and not task.bind
    )
