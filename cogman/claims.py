"""Claims: sending a task that several processes may try to send at once, from its record.

A periodic tick is due in every beat process, a chord's callback in every member that finds the chord
complete, a chain's next step again in a redelivered step. Each derives the same task id, and the
backend's :meth:`~cogman.backends.base.Backend.create_new` tells the one call that created the record:
that one publishes. Between the create and the publish the record is ``initiated`` (unconfirmed), so a
process that dies there leaves it to the re-enqueue sweep, which republishes it once (leased).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cogman.errors import BrokerUnavailable, PublishError
from cogman.message import Message
from cogman.status import UNCONFIRMED

if TYPE_CHECKING:
    from cogman.app import App
    from cogman.brokers.base import Receipt
    from cogman.record import TaskRecord

log = logging.getLogger("cogman.claims")


@dataclass(frozen=True, slots=True)
class Claim:
    """``created``: this call created the record (and published it). ``receipt``: the broker's answer
    about the message, None when nothing was published or the broker could not take it (the record
    then waits, unconfirmed, for re-enqueue)."""

    created: bool
    receipt: Receipt | None = None


def send_if_new(app: App, record: TaskRecord) -> Claim:
    """Create the record and publish it, only if no record has its id: exactly once among all callers."""
    if not app.backend.create_new(record):
        return Claim(created=False)
    return Claim(created=True, receipt=publish_recorded(app, record))


def send_if_unconfirmed(app: App, record: TaskRecord) -> Receipt | None:
    """Create the record if absent and publish it unless its record shows the broker confirmed a message
    already: a chain step resent by a redelivered step whose first worker died before publishing. At
    least once: a message published but not yet confirmed when that worker died is sent twice (the
    second is skipped if the first finished)."""
    if app.backend.create_new(record):
        return publish_recorded(app, record)
    existing = app.backend.get(record.task_id)
    if existing is None or existing.status not in UNCONFIRMED:
        return None
    return publish_recorded(app, existing)


def publish_recorded(app: App, record: TaskRecord) -> Receipt | None:
    """Publish the message of a record that exists. None when the broker cannot take it now: the record
    stays unconfirmed and the re-enqueue sweep publishes it."""
    message = Message.for_record(record, retries_left=record.retry)
    app.middleware.before("before_send", message)
    # A message parked in the outbox during an outage keeps its record's lease, so no sweep sends it too.
    app.client._keep_leases()
    try:
        receipt = app.broker.publish([message])
    except (BrokerUnavailable, PublishError) as exc:
        log.warning("task %s (%s) recorded but not published (%s); re-enqueue will publish it",
                    record.task_id, record.name, exc)  # fmt: skip
        return None
    app.middleware.after("after_send", message)
    if app.config.broker_url.startswith("memory://") and not app.config.eager:
        app.unjoined.append(record.task_id)
    return receipt
