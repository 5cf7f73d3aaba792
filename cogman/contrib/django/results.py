"""A task's cogman records (its retry chain) read as Django's ``TaskResult``.

Statuses: ``initiated``, ``queued`` and ``retry`` (recorded, waiting for a worker) are READY, ``in_progress``
is RUNNING, ``success`` SUCCESSFUL, ``failed`` FAILED, all of the chain's latest attempt. ``errors`` has
one TaskError per failed attempt, whose ``exception_class_path`` is read from its traceback (a failure with
no traceback, such as an expired or undeliverable task, says ``cogman.errors.TaskFailed`` and its reason).
cogman does not record which worker ran an attempt: ``worker_ids`` holds the id of each attempt that
started, so ``attempts`` counts them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from cogman.admin.actions import chain
from cogman.app import App
from cogman.contrib.django.tasks_api import Task, TaskError, TaskResult, TaskResultDoesNotExist, TaskResultStatus
from cogman.errors import TaskNotFound
from cogman.record import TaskRecord
from cogman.status import Status

STATUSES = {
    Status.INITIATED: TaskResultStatus.READY,
    Status.QUEUED: TaskResultStatus.READY,
    Status.RETRY: TaskResultStatus.READY,
    Status.IN_PROGRESS: TaskResultStatus.RUNNING,
    Status.SUCCESS: TaskResultStatus.SUCCESSFUL,
    Status.FAILED: TaskResultStatus.FAILED,
    Status.CANCELLED: TaskResultStatus.FAILED,  # django.tasks has no cancelled state
}
#: The exception class a failure without a traceback is reported as.
NO_TRACEBACK = "cogman.errors.TaskFailed"


def read_result(app: App, result_id: str, alias: str) -> TaskResult:
    """The TaskResult of ``result_id``; TaskResultDoesNotExist when no record has it (never sent, expired
    from the backend, forgotten) or it is not a ``django.tasks`` task."""
    try:
        attempts = chain(app.backend, result_id)
    except TaskNotFound:
        raise TaskResultDoesNotExist(f"no task result {result_id!r} (never sent, or gone from the backend)") from None
    original, latest = attempts[0], attempts[-1]
    started = [moment for record in attempts if (moment := _reached(record, Status.IN_PROGRESS)) is not None]
    result = TaskResult(
        task=django_task(app, original.name, result_id),
        id=result_id,
        status=STATUSES[latest.status],
        enqueued_at=_local(original.created_at),
        started_at=_local(started[0]) if started else None,
        finished_at=_local(_reached(latest, latest.status)) if latest.status.is_final else None,
        last_attempted_at=_local(started[-1]) if started else None,
        args=original.args,
        kwargs=original.kwargs,
        backend=alias,
        errors=[_error(record) for record in attempts if record.status is Status.FAILED],
        worker_ids=[record.task_id for record in attempts if _reached(record, Status.IN_PROGRESS) is not None],
    )
    if latest.status is Status.SUCCESS:
        object.__setattr__(result, "_return_value", latest.result)
    return result


def django_task(app: App, name: str, result_id: str) -> Task:
    """The ``django.tasks`` Task registered (or importable) under ``name``."""
    known = app.tasks.get(name)
    found: Any = getattr(known.fn, "django_task", None) if known is not None else None
    if known is None:  # a module this process has not imported yet
        try:
            found = import_string(name)
        except ImportError:
            found = None
    if not isinstance(found, Task):
        raise TaskResultDoesNotExist(f"task result {result_id!r} is of {name!r}, which is not a django.tasks task")
    return found


def _reached(record: TaskRecord, status: Status) -> datetime | None:
    """When the attempt reached ``status`` (the first time), or None."""
    moments = [moment for seen, moment in record.history if seen is status]
    if moments:
        return moments[0]
    return record.updated_at if record.status is status else None


def _local(moment: datetime | None) -> datetime | None:
    """Aware UTC as cogman stores it; naive in TIME_ZONE for a project with ``USE_TZ = False``."""
    if moment is None or settings.USE_TZ:
        return moment
    naive: datetime = timezone.make_naive(moment)
    return naive


def _error(record: TaskRecord) -> TaskError:
    trace = record.traceback or record.fail_error or ""
    return TaskError(exception_class_path=_exception_path(record), traceback=trace)


def _exception_path(record: TaskRecord) -> str:
    """``module.Class`` of the exception that failed the attempt: its ``fail_error`` names the class, the
    last line of the traceback that names it gives the module (none for a builtin)."""
    name = (record.fail_error or "").partition(":")[0].strip()
    if not record.traceback or not name.isidentifier():
        return NO_TRACEBACK
    for line in reversed(record.traceback.splitlines()):
        head = line.partition(":")[0].strip()
        if head == name:
            return f"builtins.{name}"
        if head.endswith("." + name) and all(part.isidentifier() for part in head.split(".")):
            return head
    return NO_TRACEBACK
