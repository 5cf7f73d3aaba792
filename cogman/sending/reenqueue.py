"""Re-enqueue: republish the tasks a crashed client recorded but never got the broker to confirm.

A record is written ``initiated`` (a retry attempt: ``retry``) before its message is published and moves
to ``queued`` only when the broker confirms it, so a record still unconfirmed after the grace period was
never confirmed: its client died (or gave up) with the message unsent. Workers sweep for such records
(:class:`Sweeper`) when they connect and every ``re_enqueue_interval``; a pure client with
``re_enqueue=True`` does one pass per (re)connection. The message keeps the task id and the retry
budget; the broker's confirm then moves the record to ``queued`` as for any send.

Exactly once among many sweepers: each stale record is claimed atomically in the backend (a lease of
``re_enqueue_grace`` seconds) before it is published, so N worker processes republish it once. A live
client that still holds the message in its outbox (a long broker outage) renews that lease
(:class:`cogman.client.LeaseKeeper`), so a sweep never duplicates a send it is about to make.

Records sent from inside a handler (:data:`FROM_WORKER`: the child tasks a handler sends, the workflow
steps a worker sends after a step) are swept sooner, after ``re_enqueue_child_grace``: a handler cut
short by its time limit, or a killed worker (a hard time limit, an OOM kill), between a child's record
and its publish leaves the record ``initiated`` with no message, far more often than a client dies in
that window. The sweeper then looks every ``re_enqueue_child_grace`` seconds (at most every
``re_enqueue_interval``, at least every SHORTEST_CHILD_PERIOD).

What it does not do, on purpose:

* It never republishes a confirmed task (``queued`` or later), so a healthy system sees no duplicates.
* A record that cannot be sent (bad arguments, a broker that refuses it) is marked ``failed`` with the
  reason and the pass goes on with the others; a broker that is away ends the pass quietly, leaving the
  records unconfirmed (and leased for one grace period) for the next sweep.
* It pages by ``created_at`` (a keyset), not by ``skip``, because the set shrinks while it works.
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
from cogman.status import UNCONFIRMED, Status

if TYPE_CHECKING:
    from collections.abc import Callable

    from cogman.backends.base import Backend
    from cogman.brokers.base import Broker
    from cogman.config.settings import Config

log = logging.getLogger("cogman.reenqueue")

PAGE_SIZE = 100
#: The payload entry of a record sent from inside a handler: swept after the child grace.
FROM_WORKER = "from_worker"
#: The sweeper never looks more often than this for the child grace's sake (``re_enqueue_interval`` may).
SHORTEST_CHILD_PERIOD = 1.0
#: One pass at a time per process: a reconnect during a pass waits for it.
_ONE_PASS = threading.Lock()


@dataclass
class ReEnqueueReport:
    """What one pass did: ids republished, ids marked failed (with why), and why it stopped early."""

    republished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None


def sweeps(config: Config) -> bool:
    """Whether a worker of this config sweeps: as configured, else when the backend outlives the process."""
    if config.re_enqueue is not None:
        return config.re_enqueue
    return any(not url.startswith("memory://") for url in config.backend_urls)


def re_enqueue(
    backend: Backend, broker: Broker, config: Config, *, now: datetime | None = None, page_size: int = PAGE_SIZE
) -> ReEnqueueReport:
    """Republish every unconfirmed record created at least ``config.re_enqueue_grace`` ago (one sent
    from inside a handler: ``re_enqueue_child_grace``) and claimed by this pass."""
    with _ONE_PASS:
        report = ReEnqueueReport()
        now = now or utcnow()
        cutoff = now - timedelta(seconds=config.re_enqueue_grace)
        child_cutoff = now - timedelta(seconds=child_grace(config))

        def due(record: TaskRecord) -> bool:
            return record.created_at <= cutoff or record.payload.get(FROM_WORKER) is True

        try:
            for status in UNCONFIRMED:
                _pass(backend, broker, config, status, child_cutoff, due, page_size, report)
        except BrokerUnavailable as exc:
            report.stopped = f"broker unavailable: {exc}"
        except ConnectionError as exc:  # the backend is away: nothing to read, nothing lost
            report.stopped = f"backend unavailable: {exc}"
        if report.stopped:
            log.warning("re-enqueue stopped early, the rest waits for the next sweep: %s", report.stopped)
        if report.republished or report.failed:
            log.warning(
                "re-enqueue republished %d unconfirmed task(s), marked %d failed",
                len(report.republished),
                len(report.failed),
            )
        return report


def child_grace(config: Config) -> float:
    """The age at which a record sent from inside a handler is swept (never later than any other)."""
    return min(config.re_enqueue_child_grace, config.re_enqueue_grace)


def _pass(
    backend: Backend,
    broker: Broker,
    config: Config,
    status: Status,
    cursor: datetime,
    due: Callable[[TaskRecord], bool],
    page_size: int,
    report: ReEnqueueReport,
) -> None:
    seen: set[str] = set()
    skip = 0
    while True:
        page = backend.query(TaskQuery(status=status, created_before=cursor, skip=skip, limit=page_size))
        fresh = [r for r in page.records if r.task_id not in seen and due(r)]
        seen.update(r.task_id for r in page.records)
        claimed = set(backend.claim_stale([r.task_id for r in fresh], config.re_enqueue_grace)) if fresh else set()
        _send([r for r in fresh if r.task_id in claimed], backend, broker, report)
        if page.total <= skip + page_size:
            return
        # Next page: everything not newer than the oldest record seen (``seen`` drops the repeats). The
        # cursor only needs ``skip`` to get past a page that brought nothing older (ties, skipped
        # corrupt records).
        if page.records and page.records[-1].created_at < cursor:
            cursor, skip = page.records[-1].created_at, 0
        else:
            skip += page_size


def _send(records: list[TaskRecord], backend: Backend, broker: Broker, report: ReEnqueueReport) -> None:
    messages: list[Message] = []
    for record in records:
        try:
            check_json_arguments(record.name, tuple(record.args), record.kwargs)
            messages.append(Message.for_record(record, retries_left=_budget(backend, record)))
        except ConnectionError:
            raise  # the backend is away: the claimed record waits for its lease to end and the next sweep
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


def _budget(backend: Backend, record: TaskRecord) -> int:
    """The chain's budget, for the message (informational: the worker reads it from the backend)."""
    if record.is_original:
        return record.retry
    original = backend.get(record.original_task_id)
    return original.retry if original is not None else 0


def _fail(task_id: str, reason: str, backend: Backend, report: ReEnqueueReport) -> None:
    log.error("re-enqueue: task %s cannot be sent, marking it failed: %s", task_id, reason)
    report.failed[task_id] = reason
    try:
        backend.transition(task_id, Status.FAILED, fail_error=f"re-enqueue: {reason}")
    except Exception:
        log.exception("re-enqueue: could not mark task %s failed", task_id)


class Sweeper:
    """A worker's re-enqueue thread: a pass at start, on every broker (re)connection (``wake``), and every
    ``re_enqueue_interval`` seconds, or sooner when the child grace is shorter (:func:`period`)."""

    def __init__(self, backend: Backend, broker: Broker, config: Config) -> None:
        self.backend, self.broker, self.config = backend, broker, config
        self.passes = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cogman-sweeper", daemon=True)

    def start(self) -> None:
        self._wake.set()
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self._wake.wait(period(self.config))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                re_enqueue(self.backend, self.broker, self.config)
            except BaseException:
                log.exception("re-enqueue sweep failed; the next one runs in %.0f s", period(self.config))
            self.passes += 1


def period(config: Config) -> float:
    """Seconds between two sweeps: ``re_enqueue_interval``, or the child grace when that is shorter (so a
    child is republished within about twice its grace), never below SHORTEST_CHILD_PERIOD for its sake."""
    shorter = child_grace(config)
    if shorter >= config.re_enqueue_grace:
        return config.re_enqueue_interval
    return min(config.re_enqueue_interval, max(shorter, SHORTEST_CHILD_PERIOD))
