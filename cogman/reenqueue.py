"""Re-enqueue: republish the tasks a crashed client recorded but never got the broker to confirm.

A record is written ``initiated`` before its message is published and moves to ``queued`` only when the
broker confirms it, so a record still ``initiated`` after the grace period was never confirmed: its
client died (or gave up) with the message unsent. With ``Config.re_enqueue=True`` a client runs
:func:`re_enqueue` when it connects and reconnects (``Client.connected``). The message keeps the task id
and the retry budget; the broker's confirm then moves the record to ``queued`` as for any send.

What it does not do, on purpose:

* It never republishes a confirmed task (``queued`` or later), so a healthy system sees no duplicates.
* A record that cannot be sent (bad arguments, a broker that refuses it) is marked ``failed`` with the
  reason and the pass goes on with the others; a broker that is away ends the pass quietly, leaving the
  records ``initiated`` for the next connect.
* It pages by ``created_at`` (a keyset), not by ``skip``, because the set shrinks while it works.

The grace period must exceed the time a live client may hold a message unconfirmed (its outbox during a
broker outage), or that client and the re-enqueue pass will both publish it. Run it in one kind of
process (workers, say) when several clients share a backend.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cogman.backends.base import TaskQuery
from cogman.errors import BrokerUnavailable
from cogman.message import Message, check_json_arguments
from cogman.record import TaskRecord, utcnow
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.base import Backend
    from cogman.brokers.base import Broker
    from cogman.config import Config

log = logging.getLogger("cogman.reenqueue")

PAGE_SIZE = 100
#: One pass at a time per process: a reconnect during a pass waits, then finds the first pass's records
#: already ``queued`` instead of publishing them a second time.
_ONE_PASS = threading.Lock()


@dataclass
class ReEnqueueReport:
    """What one pass did: ids republished, ids marked failed (with why), and why it stopped early."""

    republished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None


def re_enqueue(
    backend: Backend, broker: Broker, config: Config, *, now: datetime | None = None, page_size: int = PAGE_SIZE
) -> ReEnqueueReport:
    """Republish every record still ``initiated`` and created at least ``config.re_enqueue_grace`` ago."""
    with _ONE_PASS:
        return _pass(backend, broker, config, now or utcnow(), page_size)


def _pass(backend: Backend, broker: Broker, config: Config, now: datetime, page_size: int) -> ReEnqueueReport:
    report = ReEnqueueReport()
    cursor = now - timedelta(seconds=config.re_enqueue_grace)
    seen: set[str] = set()
    skip = 0
    try:
        while True:
            page = backend.query(TaskQuery(status=Status.INITIATED, created_before=cursor, skip=skip, limit=page_size))
            fresh = [r for r in page.records if r.task_id not in seen]
            seen.update(r.task_id for r in fresh)
            _send(fresh, backend, broker, report)
            if page.total <= skip + page_size:
                break
            # Next page: everything not newer than the oldest record seen (``seen`` drops the repeats). The
            # cursor only needs ``skip`` to get past a page that brought nothing older (ties, skipped
            # corrupt records).
            if page.records and page.records[-1].created_at < cursor:
                cursor, skip = page.records[-1].created_at, 0
            else:
                skip += page_size
    except BrokerUnavailable as exc:
        report.stopped = f"broker unavailable: {exc}"
    except ConnectionError as exc:  # the backend is away: nothing to read, nothing lost
        report.stopped = f"backend unavailable: {exc}"
    if report.stopped:
        log.warning("re-enqueue stopped early, the rest stays 'initiated' for the next connect: %s", report.stopped)
    if report.republished or report.failed:
        log.warning(
            "re-enqueue republished %d unconfirmed task(s), marked %d failed",
            len(report.republished),
            len(report.failed),
        )
    return report


def _send(records: list[TaskRecord], backend: Backend, broker: Broker, report: ReEnqueueReport) -> None:
    messages: list[Message] = []
    for record in records:
        try:
            check_json_arguments(record.name, tuple(record.args), record.kwargs)
            messages.append(Message.for_record(record, retries_left=record.retry))
        except Exception as exc:
            _fail(record.task_id, f"{type(exc).__name__}: {exc}", backend, report)
    if not messages:
        return
    try:
        broker.publish(messages)
        report.republished += [m.task_id for m in messages]
        return
    except BrokerUnavailable:
        raise
    except Exception as exc:
        log.warning("re-enqueue: batch publish failed (%s); sending one by one", exc)
    for message in messages:  # one refused message must not block the others
        try:
            broker.publish([message])
            report.republished.append(message.task_id)
        except BrokerUnavailable:
            raise
        except Exception as exc:
            _fail(message.task_id, f"{type(exc).__name__}: {exc}", backend, report)


def _fail(task_id: str, reason: str, backend: Backend, report: ReEnqueueReport) -> None:
    log.error("re-enqueue: task %s cannot be sent, marking it failed: %s", task_id, reason)
    report.failed[task_id] = reason
    try:
        backend.transition(task_id, Status.FAILED, fail_error=f"re-enqueue: {reason}")
    except Exception:
        log.exception("re-enqueue: could not mark task %s failed", task_id)
