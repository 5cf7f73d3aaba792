"""Unique tasks: a send whose key is held by a task that is not final sends nothing and returns that task.

A key comes from the send (``task.send(..., unique_key="invoice-42")``) or from the task
(``@app.task(unique_key=lambda invoice_id: f"invoice-{invoice_id}", unique_for=3600)``, called with the
send's arguments). :func:`unique_marks` checks it and writes it into the record's payload
(``unique_key``, ``unique_for``), so the record says which key it held; :func:`send_records` then
decides with one backend step (``Backend.create_unique``): either the record is stored holding the key
and published as any send, or the holder's id comes back and nothing is written or published.

The key stays held while the holder's chain is not final: a failed attempt that is being retried
still holds it (the chain is final only with its last attempt), and ``unique_for`` (seconds after the
send) bounds how long at most. A unique send cannot be parked during a backend outage as an ordinary
create is: it raises BackendUnavailable instead of risking a duplicate. ``send_many`` refuses unique
keys (one decision per send), and workflow steps and periodic ticks are not deduplicated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cogman.brokers.base import Receipt
from cogman.task import check_unique_for

if TYPE_CHECKING:
    from cogman.message import Message
    from cogman.record import TaskRecord
    from cogman.sending.client import Client
    from cogman.task import Task

log = logging.getLogger("cogman.client")

#: The payload entries of a unique send's record.
KEY, FOR = "unique_key", "unique_for"
#: Longest key, in UTF-8 bytes (it is part of a Redis key and of a MongoDB ``_id``).
MAX_KEY_BYTES = 512


class Deduplicated(Receipt):
    """The receipt of a send that sent nothing, settled at once: the holder's message is its own send's
    business. ``AsyncResult.deduplicated`` reads ``deduplicated`` from its receipt."""

    __slots__ = ()
    deduplicated = True

    def __init__(self) -> None:
        super().__init__(0)


def unique_marks(
    task: Task[Any, Any] | None,
    name: str,
    unique_key: str | None,
    unique_for: float | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> dict[str, Any] | None:
    """The payload entries of one call's record, or None when the send is not unique: the send's key,
    else the task's (a string, or its callable applied to the call's arguments)."""
    key: Any = unique_key
    if key is None and task is not None and task.unique_key is not None:
        try:
            key = task.unique_key(*args, **kwargs) if callable(task.unique_key) else task.unique_key
        except Exception as exc:
            raise TypeError(f"task {name}: its unique_key callable raised {type(exc).__name__}: {exc}") from exc
    if key is None:
        if unique_for is not None:
            raise ValueError(f"task {name}: unique_for was given without a unique_key")
        return None
    if not isinstance(key, str) or not 0 < len(key.encode()) <= MAX_KEY_BYTES:
        raise TypeError(f"task {name}: unique_key must be a string of 1 to {MAX_KEY_BYTES} UTF-8 bytes, got {key!r}")
    hold = check_unique_for(f"task {name}", unique_for)
    if hold is None and task is not None:
        hold = task.unique_for
    return {KEY: key, FOR: hold}


def send_records(
    client: Client, records: Sequence[TaskRecord], messages: Sequence[Message], wait_confirmed: bool | None
) -> tuple[list[str], Receipt]:
    """Send as ``Client.send`` does, unless the one record is unique: then the backend decides first."""
    unique = [record for record in records if KEY in record.payload]
    if not unique:
        return [record.task_id for record in records], client.send(records, messages, wait_confirmed=wait_confirmed)
    if len(records) != 1:
        raise ValueError(
            f"send_many cannot send unique tasks ({records[0].name}, unique_key "
            f"{unique[0].payload[KEY]!r}): send each with send() or delay(); nothing was recorded or sent"
        )
    record = records[0]
    holder = client.backend.create_unique(record, record.payload[KEY], record.payload[FOR])
    if holder is not None:
        log.debug("task %s not sent: unique key %r is held by task %s", record.name, record.payload[KEY], holder)
        return [holder], Deduplicated()
    return [record.task_id], client.send(records, messages, wait_confirmed=wait_confirmed, recorded=True)
