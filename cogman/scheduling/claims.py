"""Claims: sending a task that several processes may try to send at once, from its record.

A periodic tick is due in every beat process, a chord's callback in every member that finds the chord
complete, a chain's next step again in a redelivered step. Each derives the same task id, and the
backend's :meth:`~cogman.backends.base.Backend.create_new` tells the one call that created the record:
that one publishes. Between the create and the publish the record is ``initiated`` (unconfirmed), so a
process that dies there leaves it to the re-enqueue sweep, which republishes it once (leased).

A create whose reply was lost (the script ran, the connection dropped before its answer) is retried and
then finds the record there: "exists", though this caller made it. So a claimed record names its
claimant (:data:`CLAIMANT` in its payload), and a caller told "exists" reads the record back: its own
claim still unconfirmed is published now, not left for the sweep (or forever, with ``re_enqueue=False``).

A record left "not run" (a chain step or a chord's callback that never ran because an earlier step
failed) is replaced when the step it waited for succeeds after all: a manual retry of the failed step
(docs/workflows.md).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cogman.errors import BrokerUnavailable, PublishError
from cogman.message import Message
from cogman.signature import NOT_RUN
from cogman.status import UNCONFIRMED, Status

if TYPE_CHECKING:
    from cogman.brokers.base import Receipt
    from cogman.record import TaskRecord
    from cogman.sending.host import SendingHost

log = logging.getLogger("cogman.claims")

#: The payload entry of a claimed record naming its claimant (a beat, a chord member in one process).
CLAIMANT = "claimed_by"
_process: tuple[int, str] | None = None


def process_claimant() -> str:
    """A token of this process: a fork (``--processes``) gets its own, as its claims are its own."""
    global _process
    if _process is None or _process[0] != os.getpid():
        _process = (os.getpid(), uuid.uuid4().hex)
    return _process[1]


@dataclass(frozen=True, slots=True)
class Claim:
    """``created``: this call's claim made the record (and published it). ``receipt``: the broker's
    answer about the message, None when nothing was published or the broker could not take it (the
    record then waits, unconfirmed, for re-enqueue)."""

    created: bool
    receipt: Receipt | None = None


def send_if_new(app: SendingHost, record: TaskRecord, claimant: str) -> Claim:
    """Create the record and publish it, only if no record has its id: exactly once among all callers
    with different ``claimant``. A caller repeats a call only when an earlier one raised (its create may
    have run): with the same claimant, the repeat publishes the record if that create made it and no
    message was confirmed for it yet."""
    claimed = record.evolve(payload={**record.payload, CLAIMANT: claimant})
    created, existing = _create(app, claimed)
    if created:
        return Claim(created=True, receipt=publish_recorded(app, claimed))
    if existing is None or existing.payload.get(CLAIMANT) != claimant or existing.status not in UNCONFIRMED:
        return Claim(created=False)
    log.info("task %s (%s): this process's claim, whose create's reply was lost; publishing it now",
             record.task_id, record.name)  # fmt: skip
    return Claim(created=True, receipt=publish_recorded(app, existing))


def send_if_unconfirmed(app: SendingHost, record: TaskRecord) -> Receipt | None:
    """Create the record if absent and publish it unless its record shows the broker confirmed a message
    already: a chain step resent by a redelivered step whose first worker died before publishing, or
    whose create's reply was lost. At least once: a message published but not yet confirmed when that
    worker died is sent twice (the second is skipped if the first finished)."""
    created, existing = _create(app, record)
    if created:
        return publish_recorded(app, record)
    if existing is None or existing.status not in UNCONFIRMED:
        return None
    return publish_recorded(app, existing)


def never_ran(record: TaskRecord) -> bool:
    """A workflow record failed "not run": it waited for a step that failed, and never ran itself."""
    return record.status is Status.FAILED and (record.fail_error or "").startswith(NOT_RUN)


def _create(app: SendingHost, record: TaskRecord) -> tuple[bool, TaskRecord | None]:
    """``create_new``, and the record found when this call did not create it. One left "not run" is
    stale, since the step it waited for has now succeeded: it is replaced (deleted, created again; two
    callers doing so at the same instant could both publish: at least once)."""
    if app.backend.create_new(record):
        return True, None
    existing = app.backend.get(record.task_id)
    if existing is not None and never_ran(existing):
        log.info("task %s (%s) was recorded not run; what it waited for succeeded since: sending it",
                 record.task_id, record.name)  # fmt: skip
        app.backend.delete([record.task_id])
        if app.backend.create_new(record):
            return True, None
        existing = app.backend.get(record.task_id)
    return False, existing


def publish_recorded(app: SendingHost, record: TaskRecord) -> Receipt | None:
    """Publish the message of a record that exists. None when the broker cannot take it now: the record
    stays unconfirmed and the re-enqueue sweep publishes it."""
    message = Message.for_record(record, retries_left=record.retry)
    with app.middleware.sending(message.name, [message]) as sending:
        app.middleware.before("before_send", message)
        # A message parked in the outbox during an outage keeps its record's lease, so no sweep sends it too.
        app.client._keep_leases()
        try:
            receipt = app.broker.publish([message])
        except (BrokerUnavailable, PublishError) as exc:
            sending.failed(exc)
            log.warning("task %s (%s) recorded but not published (%s); re-enqueue will publish it",
                        record.task_id, record.name, exc)  # fmt: skip
            return None
        app.middleware.after("after_send", message)
    if app.config.broker_url.startswith("memory://") and not app.config.eager:
        app.unjoined.append(record.task_id)
    return receipt
