"""Cancel (issue 23): one task's retry chain, or every task matching a filter; shared by the Python API
(``AsyncResult.cancel``, ``app.cancel``), the CLI (``cogman cancel``) and the REST API (``POST /cancel``).

The cancel is one backend step (:meth:`Backend.cancel`): once it returns, a task that had not finished
reads ``cancelled``, whether or not a worker runs; workers ack its message unrun whenever it comes, and
a worker running it interrupts it within its next poll (cogman/worker/cancelling.py). Go-format tasks
are refused: Go Cogman's records have no cancelled status, and a Go worker would not honour one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cogman.backends.base import TaskQuery
from cogman.errors import ConfigError, NotCancellable, TaskNotFound
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.base import Backend

#: Statuses a bulk cancel may select: those not final.
CANCELLABLE = (Status.INITIATED, Status.RETRY, Status.QUEUED, Status.IN_PROGRESS)
#: Most records one bulk cancel reads; an operator cancels more by repeating it.
BULK_LIMIT = 10_000
_PAGE = 500


def cancel(backend: Backend, task_id: str) -> Status:
    """Cancel the chain of ``task_id``; return its latest attempt's status before (final: nothing
    changed). Raises TaskNotFound for an unknown id, NotCancellable for a Go-format task."""
    before = backend.cancel(task_id)
    if before is not None:
        return before
    try:
        go = backend.go_records().get(task_id)
    except ConfigError:  # no Go-format records on a Redis Cluster
        go = None
    if go is not None:
        raise NotCancellable(
            task_id, "it is a Go-format task (wire='go'): Go Cogman's records have no cancelled status"
        )
    raise TaskNotFound(task_id)


def cancel_or_refuse(backend: Backend, task_id: str) -> None:
    """``cancel``, raising NotCancellable when the task had finished already (the CLI's and the API's)."""
    before = cancel(backend, task_id)
    if before.is_final:
        raise NotCancellable(task_id, f"it is {before.value} already", before.value)


@dataclass
class BulkCancel:
    """What ``cancel_matching`` did: the ids cancelled, those found finished meanwhile (or Go-format, or
    gone), and whether more records matched than ``limit``."""

    cancelled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    more: bool = False


def cancel_matching(
    backend: Backend, *, name: str | None = None, status: Status | None = None, limit: int = BULK_LIMIT
) -> BulkCancel:
    """Cancel every task whose record matches ``name`` and ``status`` (every status not final when
    None), at most ``limit`` records read; a final ``status`` is refused (ValueError)."""
    if status is not None and status.is_final:
        raise ValueError(
            f"status {status.value!r} is final: only {', '.join(s.value for s in CANCELLABLE)} can be cancelled"
        )
    if not 1 <= limit <= BULK_LIMIT:
        raise ValueError(f"limit must be between 1 and {BULK_LIMIT}, got {limit}")
    ids: list[str] = []
    report = BulkCancel()
    for wanted in (status,) if status is not None else CANCELLABLE:
        skip = 0
        while True:
            room = min(_PAGE, limit - len(ids))
            page = backend.query(TaskQuery(status=wanted, name=name, skip=skip, limit=room))
            ids += [record.task_id for record in page.records]
            skip += len(page.records)
            if room == 0 or not page.records or skip >= page.total:
                report.more |= skip < page.total
                break
    for task_id in dict.fromkeys(ids):
        try:
            before = cancel(backend, task_id)
        except (TaskNotFound, NotCancellable):
            report.skipped.append(task_id)
            continue
        (report.skipped if before.is_final else report.cancelled).append(task_id)
    return report
