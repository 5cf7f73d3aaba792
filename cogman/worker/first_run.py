"""Which deliveries run their handler before the ``in_progress`` write is answered.

The start (``Backend.start_soon``) is sent first either way; a delivery that may be a copy of a task that
already ran waits for its reply, to skip a finished task (docs/guarantees.md). A message that is the
only copy of its task cannot be one: it was published once (``HEADER_FIRST``, set by a send with a
generated id and cleared once it went out, so an outbox replay, a re-enqueue, a retry attempt or a
workflow's step never carries it) and RabbitMQ hands it out for the first time. Its handler runs at once,
and the start's reply is read before the outcome is written, so the record, the delivery limits and
the chain a failure retries on still come from the backend.

A handler bound to its context (``bind=True``) reads the chain (attempt, retries left) from that reply,
so it waits too.

The lean profile (``Config.profile="lean"``) writes no ``in_progress`` for a first delivery at all: the
record goes from ``queued`` to its outcome, and a failure reads its chain from the record. Every other
delivery starts as in the default profile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cogman.backends.base import started_now
from cogman.message import HEADER_FIRST

if TYPE_CHECKING:
    from collections.abc import Callable

    from cogman.backends.base import Backend, Started
    from cogman.brokers.base import Delivery
    from cogman.message import Message
    from cogman.task import Task


def runs_first(delivery: Delivery, message: Message, task: Task[Any, Any]) -> bool:
    """Whether this delivery is its task's only copy, handed out for the first time, to a handler that
    needs nothing from the start's reply."""
    return (
        delivery.headers.get(HEADER_FIRST) == "1"
        and not delivery.redelivered
        and delivery.returns == 0
        and delivery.redeliveries == 0
        and message.attempt == 1
        and message.original_task_id == message.task_id
        and message.workflow is None
        and not task.bind
    )


def start_of(backend: Backend, first: bool, profile: str) -> Callable[[str, str], Callable[[], Started | None]]:
    """How a delivery starts: ``(task_id, token)`` gives the function that reads the start's result."""
    if not first:
        return lambda task_id, token: started_now(backend.start(task_id, token))
    if profile == "lean":
        return lambda task_id, token: started_now(None)
    return backend.start_soon
