"""Client: records and publishes task attempts, and hears back from the broker about them.

Order is what makes it safe: a record is written ``initiated`` before its message is published, and
moved to ``queued`` only once the broker confirmed it. A message parked in the offline outbox stays
``initiated`` until the broker takes it; one the broker never takes is recorded ``failed`` with why.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from cogman.backends.base import Backend
from cogman.brokers.base import Broker
from cogman.config import Config
from cogman.message import Message
from cogman.middleware import MiddlewareStack
from cogman.priority import Priority
from cogman.record import TaskRecord, utcnow
from cogman.status import Status

log = logging.getLogger("cogman.client")


def new_task_id() -> str:
    return str(uuid.uuid4())


def new_record(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    priority: Priority,
    retry: int,
    primary_key: str | None,
) -> TaskRecord:
    task_id = new_task_id()
    now = utcnow()
    return TaskRecord(
        task_id=task_id,
        name=name,
        original_task_id=task_id,
        priority=priority,
        payload={"args": list(args), "kwargs": kwargs},
        status=Status.INITIATED,
        primary_key=primary_key,
        retry=retry,
        created_at=now,
        updated_at=now,
    )


class Client:
    """Sends first attempts and retry attempts; is the broker's PublishListener."""

    def __init__(self, broker: Broker, backend: Backend, middleware: MiddlewareStack, config: Config) -> None:
        self.broker = broker
        self.backend = backend
        self.middleware = middleware
        self.config = config
        broker.set_listener(self)

    def send(self, records: Sequence[TaskRecord]) -> None:
        """Record new first attempts, then publish them and wait for the confirms together."""
        messages = [Message.for_record(record, retries_left=record.retry) for record in records]
        for message in messages:
            self.middleware.before("before_send", message)
        self.backend.create(records)
        self.broker.publish(messages)
        for message in messages:
            self.middleware.after("after_send", message)

    def retry(self, failed: Message) -> Message | None:
        """Spawn the next attempt of a failed one if the chain's budget allows; None when spent."""
        now = utcnow()
        attempt = TaskRecord(
            task_id=new_task_id(),
            name=failed.name,
            original_task_id=failed.original_task_id,
            priority=failed.priority,
            payload={"args": list(failed.args), "kwargs": failed.kwargs or {}},
            status=Status.RETRY,
            primary_key=failed.primary_key,
            retry=0,
            attempt=failed.attempt + 1,
            created_at=now,
            updated_at=now,
        )
        left = self.backend.spawn_retry(failed.original_task_id, attempt)
        if left is None:
            return None
        message = Message.for_record(attempt, retries_left=left)
        self.middleware.before("before_send", message)
        self.broker.publish([message])
        self.middleware.after("after_send", message)
        return message

    # PublishListener

    def connected(self) -> None:
        if self.config.re_enqueue:  # None (auto) is decided by the worker; see reenqueue.py
            from cogman.reenqueue import re_enqueue

            threading.Thread(
                target=re_enqueue, args=(self.backend, self.broker, self.config), name="cogman-re-enqueue", daemon=True
            ).start()

    def confirmed(self, messages: Sequence[Message]) -> None:
        first_attempts = [m.task_id for m in messages if m.attempt == 1]
        if first_attempts:
            self.backend.transition_many(first_attempts, Status.QUEUED)

    def abandoned(self, messages: Sequence[Message], reason: str) -> None:
        for message in messages:
            log.error("task %s (%s) abandoned, never published: %s", message.task_id, message.name, reason)
            self.backend.transition(message.task_id, Status.FAILED, fail_error=f"not published: {reason}")
