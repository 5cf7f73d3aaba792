"""AsyncResult: a handle on a sent task that follows its retry chain to the latest attempt.

Celery's vocabulary is kept for users who know it: ``state`` is one of ``PENDING`` (recorded or queued,
not started), ``STARTED`` (a worker runs it), ``RETRY`` (an earlier attempt failed; the next one waits),
``SUCCESS`` and ``FAILURE`` (the chain's last allowed attempt failed); ``successful()``, ``failed()``,
``result`` and ``traceback`` read as in Celery, and ``forget()`` deletes the chain's records. Unlike
Celery, an id that was never sent (or has expired from the backend) is not ``PENDING``: it raises
TaskNotFound, since every send is recorded first.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast

from cogman.errors import CogmanError, TaskCancelled, TaskFailed, TaskNotFound
from cogman.record import TaskRecord
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.base import Backend

R = TypeVar("R")

#: How long one ``backend.wait`` call may block when ``get`` has no timeout.
_WAIT_SLICE = 60.0


CELERY_STATES = {
    Status.INITIATED: "PENDING",
    Status.QUEUED: "PENDING",
    Status.RETRY: "RETRY",
    Status.IN_PROGRESS: "STARTED",
    Status.SUCCESS: "SUCCESS",
    Status.FAILED: "FAILURE",
    Status.CANCELLED: "REVOKED",
}


class Confirmation(Protocol):
    """The broker's receipt of a send (``cogman.brokers.base.Receipt``), as a handle waits on it."""

    def wait(self, timeout: float | None = None) -> bool: ...


class WorkerFinder(Protocol):
    """The app, as a handle asks it why a task cannot finish (memory:// with no worker here)."""

    def why_no_worker(self) -> str | None: ...


class NoWorker(CogmanError):
    """``get()`` would wait forever: the embedded memory:// transport has no worker in this process."""


class AsyncResult(Generic[R]):
    """Reads are always fresh from the backend; nothing is cached on the handle."""

    def __init__(
        self, backend: Backend, task_id: str, app: WorkerFinder | None = None, receipt: Confirmation | None = None
    ) -> None:
        self._backend = backend
        self._app = app
        self._receipt = receipt
        self.id = task_id

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    @property
    def deduplicated(self) -> bool:
        """True when this handle came back from a unique send that sent nothing: it is the task that
        held the key (docs/control.md)."""
        return getattr(self._receipt, "deduplicated", False) is True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def record(self) -> TaskRecord:
        """This attempt's own record."""
        record = self._backend.get(self.id)
        if record is None:
            handed = getattr(self._receipt, "recorded", None)  # lean profile: maybe not written yet
            if handed is not None and handed():
                record = self._backend.get(self.id)
            if record is None:
                raise TaskNotFound(self.id)
        return record

    def latest(self) -> TaskRecord:
        """The record of the latest attempt in this task's retry chain."""
        return self._latest()[0]

    @property
    def status(self) -> Status:
        return self.latest().status

    def wait_sent(self, timeout: float | None = None) -> bool:
        """True once the broker confirmed the task's message (its record is then ``queued`` or later);
        False if not within ``timeout``. Raises PublishError naming the reason when the broker refused
        it. ``.delay()`` returns before the confirm by default (``send_mode="recorded"``); this is for
        a caller that wants to know. A handle made from an id alone reads the record instead."""
        if self._receipt is not None:
            return self._receipt.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.01
        while True:
            record = self.record()
            if record.status not in (Status.INITIATED, Status.RETRY):
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            time.sleep(pause if remaining is None else min(pause, remaining))
            pause = min(pause * 2, 0.5)

    def ready(self) -> bool:
        return self.status.is_final

    @property
    def state(self) -> str:
        """Celery's name for where the chain stands (see the module docstring)."""
        latest = self.latest()
        if latest.attempt > 1 and latest.status in (Status.QUEUED, Status.RETRY):
            return "RETRY"
        return CELERY_STATES[latest.status]

    def successful(self) -> bool:
        return self.status is Status.SUCCESS

    def failed(self) -> bool:
        """True once the chain's last allowed attempt failed (a failure with a retry to come is not)."""
        return self.status is Status.FAILED

    @property
    def result(self) -> R | TaskFailed | None:
        """The return value once succeeded, the TaskFailed once failed, else None (never blocks)."""
        latest = self.latest()
        if latest.status is Status.SUCCESS:
            return cast(R, latest.result)
        if latest.status is Status.FAILED:
            return TaskFailed(self.id, latest.fail_error, latest.traceback, latest.attempt)
        if latest.status is Status.CANCELLED:
            return TaskCancelled(self.id, attempts=latest.attempt)
        return None

    @property
    def traceback(self) -> str | None:
        """The failed attempt's traceback, once the chain failed."""
        latest = self.latest()
        return latest.traceback if latest.status is Status.FAILED else None

    def forget(self) -> None:
        """Delete the records of this task's whole chain (the original and every retry attempt), as
        Celery's ``forget``; afterwards reads raise TaskNotFound. Forgetting twice, or an id never sent,
        does nothing. A chain still queued or running is not stopped: its worker still runs it, and the
        statuses it then writes are kept apart as early statuses (Redis and MongoDB drop them after an
        hour) rather than bringing the records back. A Go-format task's Go records go too (those of the
        attempts it can follow, cogman/admin/go_actions.py)."""
        from cogman.admin.actions import chain
        from cogman.admin.go_actions import forget_go

        try:
            attempts = chain(self._backend, self.id)
        except TaskNotFound:
            return
        self._backend.delete([record.task_id for record in forget_go(self._backend, attempts)])

    def cancel(self) -> bool:
        """Cancel this task's chain (Celery's ``revoke``, kept in the backend, not in worker memory): True
        if it had not finished; it reads ``cancelled`` as soon as this returns, its message is acked
        unrun wherever it is delivered, no retry follows, and a worker running it interrupts it within
        about a second (docs/control.md). False when it had finished already: nothing changes. Raises
        TaskNotFound for an unknown id, NotCancellable for a Go-format task."""
        from cogman.admin.cancel import cancel

        return not cancel(self._backend, self.id).is_final

    def get(self, timeout: float | None = None) -> R:
        """The handler's return value once the chain is finished.

        Raises TaskFailed when the last allowed attempt failed (TaskCancelled when it was cancelled),
        TimeoutError when not finished in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            latest, finished = self._look()
            if finished:
                return self._outcome(latest)
            self._backend.wait(latest.task_id, self._next_wait(latest, deadline, timeout))

    async def get_async(self, timeout: float | None = None) -> R:
        """``get`` for asyncio code: the same outcomes and exceptions, while the event loop runs on (reads
        in the app's thread pool, the wait on the backend's asyncio wake-up: docs/async.md). Cancelling
        it leaves no thread or connection waiting."""
        from cogman.aio import waiting

        bridge = waiting.bridge_for(self._app)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            latest, finished = await bridge.run(self._look)
            if finished:
                return self._outcome(latest)
            wait = self._next_wait(latest, deadline, timeout)
            await waiting.until_final(bridge, self._backend, latest.task_id, wait)

    async def status_async(self) -> Status:
        """``status`` for asyncio code (read in the app's thread pool)."""
        from cogman.aio import waiting

        return (await waiting.bridge_for(self._app).run(self.latest)).status

    def _look(self) -> tuple[TaskRecord, bool]:
        """(latest attempt, whether the chain is finished). When the original is the latest, its status
        and pointer came from one read: a retry is spawned before the failure is written, so a final
        original without a pointer is the end."""
        latest, original = self._latest()
        return latest, latest.status.is_final and (latest is original or self._pointer(original) == latest.task_id)

    def _outcome(self, latest: TaskRecord) -> R:
        if latest.status is Status.SUCCESS:
            return cast(R, latest.result)
        if latest.status is Status.CANCELLED:
            raise TaskCancelled(self.id, attempts=latest.attempt)
        raise TaskFailed(self.id, latest.fail_error, latest.traceback, latest.attempt)

    def _next_wait(self, latest: TaskRecord, deadline: float | None, timeout: float | None) -> float:
        """Seconds the next wait may last; raises NoWorker when it would never end, TimeoutError past
        the deadline."""
        if self._app is not None:
            trap = self._app.why_no_worker()
            if trap is not None:
                raise NoWorker(f"task {self.id} is {latest.status.value} and will never finish here: {trap}")
        remaining = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"task {self.id} not finished after {timeout} s (status {latest.status.value})")
        return min(remaining, _WAIT_SLICE)

    def _latest(self) -> tuple[TaskRecord, TaskRecord]:
        """(latest attempt, original attempt)."""
        record = self.record()
        original = record
        if not record.is_original:
            original = self._backend.get(record.original_task_id) or record
        pointer = original.latest_attempt_id
        if pointer is None or pointer == original.task_id:
            return original, original
        if pointer == record.task_id:
            return record, original
        latest = self._backend.get(pointer)
        return (latest or original), original

    def _pointer(self, original: TaskRecord) -> str:
        """Re-read the chain's pointer: a retry may have been spawned while we read the attempt."""
        fresh = self._backend.get(original.task_id) or original
        return fresh.latest_attempt_id or fresh.task_id


class HasBackend(Protocol):
    """The app, as ``cancel_task`` uses it."""

    @property
    def backend(self) -> Backend: ...


def cancel_task(app: HasBackend, task_id: str) -> bool:
    """``app.cancel(task_id)``: :meth:`AsyncResult.cancel` for an id (True if it had not finished)."""
    return AsyncResult(app.backend, task_id).cancel()
