"""Operator actions shared by the REST API and the CLI: a manual retry, a task's chain of attempts, queue
depths, purging the queues and the workers alive.

Built on the broker and backend protocols only, so each works the same on every store; the API and the
CLI only translate arguments and errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cogman.admin import go_actions
from cogman.backends.base import TaskQuery
from cogman.brokers.base import Delivery, QueueStats
from cogman.errors import CogmanError, TaskNotFound
from cogman.message import HEADER_TASK_ID, Message
from cogman.record import TaskRecord, utcnow
from cogman.result import AsyncResult
from cogman.scheduling.claims import never_ran
from cogman.sending.client import retry_task_id
from cogman.sending.ids import new_task_id
from cogman.signature import ChainStep, callback_id, chain_ids
from cogman.signature import parse_workflow as parse
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.app import App
    from cogman.backends.base import Backend

#: The error text of a task whose message ``cogman purge`` removed.
PURGED = "purged by an operator (cogman purge)"
#: Records of the same name read at most to find the attempts of one chain.
CHAIN_SCAN_LIMIT = 1000


class NotRetryable(CogmanError):
    """A manual retry of a chain whose latest attempt has not failed (it runs, waits, or succeeded)."""

    def __init__(self, task_id: str, latest: TaskRecord) -> None:
        super().__init__(
            f"task {task_id} is not failed: its latest attempt {latest.task_id} is {latest.status.value}; "
            "pass force to run it again anyway"
        )
        self.task_id = task_id
        self.latest = latest


class NeverRan(NotRetryable):
    """A workflow step recorded "not run": it never ran because a step before it failed. Run on its own
    it would miss the input that step gives it; retrying the failed step resumes the workflow."""

    def __init__(self, task_id: str, latest: TaskRecord) -> None:
        CogmanError.__init__(
            self,
            f"task {task_id} never ran ({latest.fail_error}); retry the step that failed instead: the workflow "
            "resumes from there",
        )
        self.task_id = task_id
        self.latest = latest


class RetryBudgetRace(CogmanError):
    """The budget raised for a manual retry was spent by another retry before this one could use it."""


def retry_task(app: App, task_id: str, *, retries: int = 1, force: bool = False) -> TaskRecord:
    """Cogman's manual retry: add ``retries`` to the chain's budget, then spend one of them on an attempt
    published now, so ``retries - 1`` automatic retries are left. Returns the new attempt's record.

    Raises TaskNotFound, NotRetryable (unless ``force``), NeverRan (a workflow step recorded "not run",
    force or not), ValueError for a bad ``retries``, and BackendUnavailable / BrokerUnavailable. The
    attempt is recorded (status ``retry``) before it is published, so a publish that fails is republished
    by re-enqueue, never lost.

    A workflow step (chain step, chord member) resumes its workflow when the attempt succeeds: the "not
    run" records its failure left are deleted first, so the workflow's handles wait again instead of
    raising, and the worker sends what follows the step as for any success (docs/workflows.md).
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
        raise ValueError(f"retry must be an integer of at least 1, got {retries!r}")
    backend = app.backend
    record = backend.get(task_id)
    if record is None:
        raise TaskNotFound(task_id)
    latest = AsyncResult(backend, task_id).latest()
    if never_ran(latest):
        raise NeverRan(task_id, latest)
    if latest.status is not Status.FAILED and not force:
        raise NotRetryable(task_id, latest)
    original_id = record.original_task_id
    if go_actions.is_go(record):  # Go's REST /retry, with cogman's checks (go_actions.py)
        return go_actions.retry_go_task(app, latest, original_id, retries)
    _reopen_workflow(backend, original_id)
    if backend.add_retries(original_id, retries) is None:
        raise TaskNotFound(original_id)
    now = utcnow()
    attempt = TaskRecord(
        task_id=new_task_id(),
        name=latest.name,
        original_task_id=original_id,
        priority=latest.priority,
        payload=latest.payload,
        status=Status.RETRY,
        primary_key=latest.primary_key,
        retry=0,
        attempt=latest.attempt + 1,
        created_at=now,
        updated_at=now,
    )
    left = backend.spawn_retry(original_id, attempt)
    if left is None:
        raise RetryBudgetRace(f"the retries added to task {original_id} were spent by another retry; try again")
    message = Message.for_record(attempt, retries_left=left)
    with app.middleware.sending(message.name, [message]):
        app.middleware.before("before_send", message)
        app.broker.publish([message])
        app.middleware.after("after_send", message)
    return attempt


def _reopen_workflow(backend: Backend, step_id: str) -> None:
    """Delete the "not run" records a workflow step's failure left (the chain's later steps, the chord's
    callback): a retry that succeeds sends them for real. The worker replaces one it still finds (one
    written after this ran); deleting first keeps the handles waiting instead of raising meanwhile."""
    original = backend.get(step_id)
    try:
        spec = parse(original.payload.get("workflow")) if original is not None else None
    except (TypeError, ValueError):
        return  # a malformed spec: the step cannot resume anything (its message was dead-lettered)
    if spec is None:
        return
    later = chain_ids(step_id, len(spec.rest) + 1)[1:] if isinstance(spec, ChainStep) else [callback_id(spec.chord_id)]
    stale = [task_id for task_id in later if (found := backend.get(task_id)) is not None and never_ran(found)]
    if stale:
        backend.delete(stale)


def chain(backend: Backend, task_id: str) -> list[TaskRecord]:
    """Every attempt of the task's retry chain, first to latest.

    Only the latest attempt is linked from the original; the ones between are found by their derived ids
    (automatic retries) and among the records of the same name created between the original and the
    latest (at most CHAIN_SCAN_LIMIT of them).
    """
    record = backend.get(task_id)
    if record is None:
        raise TaskNotFound(task_id)
    original = record if record.is_original else (backend.get(record.original_task_id) or record)
    found = {original.task_id: original, record.task_id: record}
    pointer = original.latest_attempt_id
    if pointer and pointer != original.task_id:
        latest = backend.get(pointer)
        if latest is not None:
            found[latest.task_id] = latest
        end = latest.created_at if latest is not None else utcnow()
        query = TaskQuery(name=original.name, created_after=original.created_at, created_before=end,
                          limit=CHAIN_SCAN_LIMIT)  # fmt: skip
        for candidate in backend.query(query).records:
            if candidate.original_task_id == original.task_id:
                found.setdefault(candidate.task_id, candidate)
    # An automatic retry's id derives from the failed attempt's: follow those links too, so no attempt
    # hides behind the scan limit (only manual retries, with fresh ids, need the scan).
    frontier = list(found.values())
    while frontier:
        successor_id = retry_task_id(frontier.pop().task_id)
        if successor_id not in found:
            successor = backend.get(successor_id)
            if successor is not None and successor.original_task_id == original.task_id:
                found[successor_id] = successor
                frontier.append(successor)
    return sorted(found.values(), key=lambda r: (r.attempt, r.created_at))


@dataclass(frozen=True, slots=True)
class QueueReport:
    """The broker's queues with totals over the task queues (dead letters and delayed tasks counted
    apart: neither is waiting for a worker)."""

    queues: list[QueueStats]

    @property
    def task_queues(self) -> list[QueueStats]:
        return [q for q in self.queues if q.kind not in ("dead_letter", "delayed")]

    @property
    def delay_queues(self) -> list[QueueStats]:
        return [q for q in self.queues if q.kind == "delayed"]

    @property
    def listed(self) -> list[QueueStats]:
        """The queues shown one by one: the delay ladder's levels are summed in ``delayed`` instead."""
        return [q for q in self.queues if q.kind != "delayed"]

    @property
    def delayed(self) -> int:
        """Tasks waiting for their ``eta`` (countdown, retry backoff) in the broker."""
        return sum(q.ready for q in self.delay_queues)

    @property
    def total_queue(self) -> int:
        return len(self.task_queues)

    @property
    def total_ready(self) -> int:
        return sum(q.ready for q in self.task_queues)

    @property
    def total_consumers(self) -> int:
        return sum(q.consumers for q in self.task_queues)

    @property
    def dead_letters(self) -> int:
        return sum(q.ready for q in self.queues if q.kind == "dead_letter")


def queue_report(app: App) -> QueueReport:
    return QueueReport(app.broker.queue_stats())


def purge(app: App) -> int:
    """Remove every message waiting in the task queues; each purged task is recorded ``failed`` (before
    its message is acked) with PURGED, so no record waits forever for a message that is gone."""
    backend = app.backend

    def settle(deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            task_id = delivery.headers.get(HEADER_TASK_ID)
            if isinstance(task_id, str) and task_id:
                backend.transition(task_id, Status.FAILED, fail_error=PURGED)

    return app.broker.purge(settle)


def live_workers(
    app: App, *, within: float | None = None, host: str | None = None, all_apps: bool = False
) -> list[dict[str, Any]]:
    """Heartbeats of the app's workers (of every app with ``all_apps``), optionally only those seen in
    the last ``within`` seconds and on ``host``; sorted by host and pid."""
    since = utcnow() - timedelta(seconds=within) if within is not None else None
    workers = []
    for info in app.backend.live_workers():
        if not all_apps and info.get("app") != app.name:
            continue
        if host is not None and info.get("host") != host:
            continue
        seen = _seen(info)
        if since is not None and (seen is None or seen < since):
            continue
        workers.append(info)
    return sorted(workers, key=lambda w: (str(w.get("host")), str(w.get("pid")), str(w.get("id"))))


def _seen(info: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(info.get("last_seen")))
    except ValueError:
        return None
