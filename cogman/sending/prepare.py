"""What a send records and publishes: checked records and their messages, each encoded once.

Every check happens here, before anything is written: the arguments against the handler's signature
(when the task is registered in this process), JSON (strict: no NaN), the priority, the retry budget,
the send options (``countdown``/``eta``/``expires``, cogman/delays.py) and the encoded size against
``max_message_size``. A send that fails a check has recorded and published nothing.

A record sent from inside a handler (a child task, or the workflow step a worker sends after a step) is
marked (:data:`cogman.reenqueue.FROM_WORKER`): a time limit or a killed worker may cut such a send
between the record and the publish, so the sweep republishes it after the shorter child grace.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cogman.delays import plan
from cogman.errors import MessageTooLarge
from cogman.message import Message, check_json_arguments
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.sending.client import new_record
from cogman.sending.reenqueue import FROM_WORKER
from cogman.sending.unique import unique_marks

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cogman.config import Config
    from cogman.task import Task

Calls = Sequence[tuple[tuple[Any, ...], dict[str, Any]]]


#: A task id is also the AMQP ``message_id``, a short string: py-amqp cannot encode a longer one.
MAX_TASK_ID_BYTES = 255
#: The threads handlers run on: a worker's handler threads (cogman/worker/worker.py) and its event loop's
#: (async handlers, cogman/worker/handlers.py). Sends made there are marked FROM_WORKER.
HANDLER_THREADS = ("cogman-handler-", "cogman-asyncio")


@dataclass(frozen=True, slots=True)
class SendOptions:
    """The options of one send, the same for every call of a batch (``task_ids`` and ``extras``: one per
    call). ``extras`` adds entries to a record's payload (a workflow's spec, a periodic tick)."""

    priority: Priority | str | None = None
    retry: int | None = None
    primary_key: str | None = None
    task_ids: Sequence[str] | None = None
    extras: Sequence[dict[str, Any] | None] | None = None
    countdown: float | None = None
    eta: datetime | None = None
    expires: float | datetime | None = None
    #: cogman/sending/unique.py; the task's own key applies only to sends that do not choose their ids
    #: (workflow steps and periodic ticks are never deduplicated).
    unique_key: str | None = None
    unique_for: float | None = None


def prepare(
    config: Config, tasks: Mapping[str, Task[Any, Any]], name: str, calls: Calls, options: SendOptions
) -> tuple[list[TaskRecord], list[Message]]:
    task = tasks.get(name)
    priority = Priority.parse(
        options.priority if options.priority is not None else task.priority if task else Priority.HIGH
    )
    budget = options.retry if options.retry is not None else task.retry if task else 0
    if not isinstance(budget, int) or budget < 0:
        raise ValueError(f"retry must be a non-negative integer, got {budget!r}")
    for label, per_call in (("task_ids", options.task_ids), ("extras", options.extras)):
        if per_call is not None and len(per_call) != len(calls):
            raise ValueError(f"{label} gives {len(per_call)} entries for {len(calls)} calls")
    for task_id in options.task_ids or ():
        if not isinstance(task_id, str) or not 0 < len(task_id.encode()) <= MAX_TASK_ID_BYTES:
            raise ValueError(
                f"task_id must be a string of 1 to {MAX_TASK_ID_BYTES} UTF-8 bytes, got {str(task_id)[:40]!r}"
            )
    when = plan(countdown=options.countdown, eta=options.eta, expires=options.expires)
    marks = {FROM_WORKER: True} if threading.current_thread().name.startswith(HANDLER_THREADS) else None
    records = []
    for index, (args, kwargs) in enumerate(calls):
        if task is not None:
            try:
                task.check_arguments(args, kwargs)
            except Exception as exc:
                raise TypeError(str(exc)) from None
        record = new_record(
            name,
            args,
            kwargs,
            priority=priority,
            retry=budget,
            primary_key=options.primary_key,
            task_id=options.task_ids[index] if options.task_ids is not None else None,
            eta=when.eta,
            expires=when.expires,
        )
        extra = options.extras[index] if options.extras is not None else None
        asked = options.unique_key is not None or options.unique_for is not None
        if asked or (options.task_ids is None and task is not None and task.unique_key):
            unique = unique_marks(task, name, options.unique_key, options.unique_for, args, kwargs)
            extra = {**(extra or {}), **(unique or {})}
        if extra or marks:
            record = record.evolve(payload={**record.payload, **(extra or {}), **(marks or {})})
        records.append(record)
    first = options.task_ids is None  # a generated id: no other message of this task exists
    return records, [checked_message(config, record, first) for record in records]


def checked_message(config: Config, record: TaskRecord, first: bool = False) -> Message:
    """The record's message, encoded here once (the publisher sends these bytes): arguments JSON cannot
    carry raise TypeError naming the argument, an oversized message MessageTooLarge. ``first``: the
    message carries ``HEADER_FIRST`` (cogman/message.py)."""
    message = Message.for_record(record, retries_left=record.retry, first=first)
    try:
        size = len(message.encode())
    except (TypeError, ValueError):
        check_json_arguments(record.name, tuple(record.args), record.kwargs)
        raise
    limit = config.max_message_size
    if size > limit:
        raise MessageTooLarge(
            f"task {record.name}: its message is {size} bytes encoded, over max_message_size={limit} bytes; "
            "nothing was recorded or sent"
        )
    return message
