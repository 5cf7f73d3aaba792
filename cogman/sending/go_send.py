"""Sending a Go-format task (``@app.task(name=..., wire="go")``) to Go Cogman workers (issue 22).

As Go's ``SendTask``: the payload bytes are the body (no JSON envelope, no ``content_type``), the
headers ``TaskName`` and ``TaskID``, ``message_id`` the TaskID, persistent; the record is Go's, written
``initiated`` before the publish and moved to ``queued`` when the broker confirms it
(``Client.confirmed``), and ``.delay()`` returns only then, whatever ``send_mode`` says: no re-enqueue
sweep reads Go records, so a message still in a dead client's outbox would be lost. The publish goes
through the same broker as cogman's own messages: outbox, confirms and reconnection are unchanged. What
is not Go's is refused before anything is written:
``countdown``/``eta``/``expires`` (Go has no delays), ``extras``, and a call that is not one payload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cogman.brokers.base import Receipt
from cogman.errors import MessageTooLarge
from cogman.gowire.record import GoRecord
from cogman.gowire.wire import HEADER_TASK_ID, HEADER_TASK_NAME
from cogman.message import Message
from cogman.priority import Priority
from cogman.sending.ids import new_task_id

if TYPE_CHECKING:
    from cogman.config.settings import Config
    from cogman.sending.client import Client
    from cogman.task import Task

_NOT_GO = ("countdown", "eta", "expires", "extras", "unique_key", "unique_for")


def go_records_for(
    config: Config, task: Task[Any, Any], calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], **options: Any
) -> list[GoRecord]:
    """The checked records of a send; raises TypeError/ValueError naming what is wrong, having written
    nothing."""
    refused = [name for name in _NOT_GO if options.get(name) is not None]
    unknown = set(options) - {"priority", "retry", "primary_key", "task_ids", *_NOT_GO}
    if refused or unknown:
        raise ValueError(f"task {task.name} speaks Go Cogman's format, which has no {sorted([*refused, *unknown])}")
    priority = Priority.parse(options.get("priority") or task.priority)
    budget = task.retry if options.get("retry") is None else options["retry"]
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
        raise ValueError(f"retry must be a non-negative integer, got {budget!r}")
    task_ids = options.get("task_ids")
    if task_ids is not None and len(task_ids) != len(calls):
        raise ValueError(f"task_ids gives {len(task_ids)} entries for {len(calls)} calls")
    records = []
    for index, (args, kwargs) in enumerate(calls):
        if kwargs or len(args) != 1 or not isinstance(args[0], bytes | bytearray | memoryview):
            raise TypeError(
                f"task {task.name} speaks Go Cogman's format: send it one payload of bytes, "
                f"as .delay(payload); got {len(args)} positional and {len(kwargs)} keyword argument(s)"
                + (f" (a {type(args[0]).__name__})" if len(args) == 1 and not kwargs else "")
            )
        payload = bytes(args[0])
        if len(payload) > config.max_message_size:
            raise MessageTooLarge(
                f"task {task.name}: its payload is {len(payload)} bytes, over max_message_size="
                f"{config.max_message_size} bytes; nothing was recorded or sent"
            )
        task_id = task_ids[index] if task_ids is not None else new_task_id()
        key = options.get("primary_key") or ""
        records.append(GoRecord.new(task_id, task.name, payload, priority=priority, retry=budget, primary_key=key))
    return records


def send_go(
    client: Client,
    config: Config,
    task: Task[Any, Any],
    calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    wait_confirmed: bool | None = None,
    **options: Any,
) -> tuple[list[str], Receipt]:
    """Record each call ``initiated`` (Go's record), then publish them; the ids and the receipt."""
    records = go_records_for(config, task, calls, **options)
    messages = [message_for_record(record) for record in records]
    for message in messages:
        client.middleware.before("before_send", message)
    store = client.backend.go_records()
    for record in records:
        store.create(record)
    if wait_confirmed is None:  # whatever send_mode says: no re-enqueue sweep reads Go records (go-interop.md)
        wait_confirmed = True
    receipt = client.broker.publish(messages, wait=wait_confirmed)
    for message in messages:
        client.middleware.after("after_send", message)
    return [record.task_id for record in records], receipt


def go_message(task_id: str, name: str, payload: bytes, priority: Priority, original_task_id: str = "") -> Message:
    """A Go-format message: ``payload`` is its body; a handler receives it as its one argument."""
    return Message(
        task_id=task_id,
        name=name,
        original_task_id=original_task_id or task_id,
        priority=priority,
        args=(payload,),
        raw_body=payload,
    )


def message_from_delivery(body: bytes, headers: Mapping[str, Any], priority: Priority) -> Message:
    """The Go-format message a delivery carries (``is_go_delivery`` said it is one)."""
    return go_message(str(headers[HEADER_TASK_ID]), str(headers[HEADER_TASK_NAME]), bytes(body), priority)


def message_for_record(record: GoRecord) -> Message:
    """What Go publishes for ``record`` (a first attempt or a retry): its payload, under its id."""
    return go_message(record.task_id, record.name, record.payload, record.priority, record.original_task_id)
