"""Result handles of workflows: a chain's last result, a group's list, a chord's callback result.

They read the backend like :class:`~cogman.result.AsyncResult`, from any process. A chain's later steps
and a chord's callback are recorded only once what comes before them finished, but their ids are
derived (cogman/signature.py), so a handle waits on an id that has no record yet. A failure raises
:class:`~cogman.errors.StepFailed`, naming the step that failed and carrying its error and traceback.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from cogman.errors import StepFailed, TaskCancelled, TaskFailed, TaskNotFound
from cogman.result import AsyncResult, NoWorker
from cogman.signature import NOT_RUN
from cogman.status import Status
from cogman.workflows.cancel import cancel_steps

if TYPE_CHECKING:
    from cogman.record import TaskRecord
    from cogman.signature import SendingApp

#: How long one ``backend.wait`` may block when ``get`` has no timeout.
_WAIT_SLICE = 60.0


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _get(app: SendingApp, task_id: str, timeout: float | None, progress: Any) -> Any:
    """``AsyncResult(task_id).get`` once the record exists; TimeoutError says where the workflow stands."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = _remaining(deadline)
        if app.backend.wait(task_id, _WAIT_SLICE if left is None else min(left, _WAIT_SLICE)) is not None:
            break
        trap = app.why_no_worker()
        if trap is not None:
            raise NoWorker(f"workflow task {task_id} will never run here: {trap}")
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"workflow not finished in time: {progress()}")
    try:
        return AsyncResult(app.backend, task_id, app).get(_remaining(deadline))
    except TimeoutError:
        raise TimeoutError(f"workflow not finished in time: {progress()}") from None


def _finished(app: SendingApp, task_id: str) -> bool:
    latest = _latest(app, task_id)
    return latest is not None and latest.status.is_final


def _latest(app: SendingApp, task_id: str) -> TaskRecord | None:
    try:
        return AsyncResult(app.backend, task_id, app).latest()
    except TaskNotFound:
        return None


class ChainResult:
    """``.get()`` is the last step's result. ``steps`` are the handles of each step (a step not reached
    yet has no record: its handle raises TaskNotFound)."""

    def __init__(self, app: SendingApp, ids: list[str], names: list[str]) -> None:
        self.app = app
        self.ids = ids
        self.names = names
        #: The last step's id: its result is the chain's.
        self.id = ids[-1]

    def __repr__(self) -> str:
        return f"<ChainResult {self.ids[0]} .. {self.id} ({len(self.ids)} steps)>"

    @property
    def steps(self) -> list[AsyncResult[Any]]:
        return [AsyncResult(self.app.backend, task_id, self.app) for task_id in self.ids]

    def ready(self) -> bool:
        return _finished(self.app, self.id)

    def cancel(self) -> bool:
        """Cancel every step that has not finished, those not sent yet included (workflows/cancel.py);
        True if any had not. ``get()`` then raises TaskCancelled."""
        return cancel_steps(self.app, list(zip(self.ids, self.names, strict=True))[::-1])

    def get(self, timeout: float | None = None) -> Any:
        """Raises StepFailed naming the step that failed (the steps after it are recorded not run)."""
        try:
            return _get(self.app, self.id, timeout, self.progress)
        except TaskFailed as failed:
            raise self._culprit(failed) from None

    def progress(self) -> str:
        """Where the chain stands: the first step that has not succeeded."""
        for position, (task_id, name) in enumerate(zip(self.ids, self.names, strict=True), 1):
            latest = _latest(self.app, task_id)
            where = f"step {position} of {len(self.ids)} ({name})"
            if latest is None:
                return f"{where} not sent yet"
            if latest.status is not Status.SUCCESS:
                return f"{where} is {latest.status.value}"
        return "every step succeeded"

    def _culprit(self, failed: TaskFailed) -> TaskFailed:
        for position, (task_id, name) in enumerate(zip(self.ids, self.names, strict=True), 1):
            latest = _latest(self.app, task_id)
            if latest is not None and latest.status is Status.FAILED and not _not_run(latest):
                where = f"chain step {position} of {len(self.ids)} ({name})"
                return StepFailed(where, task_id, latest.fail_error, latest.traceback, latest.attempt)
        return failed


class GroupResult:
    """``.get()`` is the list of the members' results, in member order."""

    def __init__(self, app: SendingApp, results: list[AsyncResult[Any]], names: list[str]) -> None:
        self.app = app
        self.results = results
        self.names = names

    def __repr__(self) -> str:
        return f"<GroupResult {len(self.results)} members>"

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult[Any]:
        return self.results[index]

    def ready(self) -> bool:
        return all(result.ready() for result in self.results)

    def completed_count(self) -> int:
        return sum(result.successful() for result in self.results)

    def cancel(self) -> bool:
        """Cancel every member that has not finished; True if any had not."""
        return cancel_steps(
            self.app, [(result.id, name) for result, name in zip(self.results, self.names, strict=True)]
        )

    def get(self, timeout: float | None = None) -> list[Any]:
        """Raises StepFailed for the first member (in member order) whose last attempt failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for index, result in enumerate(self.results):
            try:
                values.append(result.get(_remaining(deadline)))
            except TaskCancelled:
                raise
            except TaskFailed as failed:
                raise self._failed(index, failed) from None
        return values

    def first_failure(self, kind: str = "group member") -> StepFailed | None:
        """The first member (in member order) whose last attempt failed, as StepFailed; None if none."""
        for index, result in enumerate(self.results):
            latest = _latest(self.app, result.id)
            if latest is not None and latest.status is Status.FAILED:
                failed = TaskFailed(result.id, latest.fail_error, latest.traceback, latest.attempt)
                return self._failed(index, failed, kind)
        return None

    def _failed(self, index: int, failed: TaskFailed, kind: str = "group member") -> StepFailed:
        where = f"{kind} {index + 1} of {len(self.results)} ({self.names[index]})"
        return StepFailed(where, failed.task_id, failed.error, failed.traceback, failed.attempts)


class ChordResult:
    """``.get()`` is the callback's result; ``group`` holds the members' handles."""

    def __init__(self, app: SendingApp, callback_id: str, callback_name: str, members: GroupResult) -> None:
        self.app = app
        self.id = callback_id
        self.callback_name = callback_name
        self.group = members

    def __repr__(self) -> str:
        return f"<ChordResult {self.id} ({len(self.group)} members)>"

    def ready(self) -> bool:
        return _finished(self.app, self.id)

    def cancel(self) -> bool:
        """Cancel the callback first (recorded ``cancelled``, so it is never sent), then every member
        that has not finished; True if any step had not."""
        members = [(result.id, name) for result, name in zip(self.group.results, self.group.names, strict=True)]
        return cancel_steps(self.app, [(self.id, self.callback_name), *members])

    def get(self, timeout: float | None = None) -> Any:
        """Raises StepFailed naming the failed member (the callback is recorded not run), or the callback;
        TaskCancelled once the chord was cancelled."""
        try:
            return _get(self.app, self.id, timeout, self.progress)
        except TaskCancelled:
            raise
        except TaskFailed as failed:
            latest = _latest(self.app, self.id)
            member = self.group.first_failure("chord member") if latest is not None and _not_run(latest) else None
            if member is not None:
                raise member from None
            raise StepFailed(f"chord callback ({self.callback_name})", failed.task_id, failed.error,
                             failed.traceback, failed.attempts) from None  # fmt: skip

    def progress(self) -> str:
        done = self.group.completed_count()
        return f"{done} of {len(self.group)} chord members succeeded; callback {self.id} not finished"


def _not_run(record: TaskRecord) -> bool:
    return (record.fail_error or "").startswith(NOT_RUN)
