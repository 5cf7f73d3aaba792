"""``CogmanBackend``: Django's ``django.tasks`` (Django 6, or the ``django-tasks`` backport) on cogman.

``TASKS = {"default": {"BACKEND": "cogman.contrib.django.CogmanBackend"}}``; then ``@task`` functions are
sent by ``.enqueue()`` to RabbitMQ through the project's app (``cogman.contrib.django.app``) and run by
``cogman worker``. Each is a cogman task named by its module path (``shop.tasks.send_receipt``), registered
when it is defined, so a worker knows it once the module is imported (every installed app's ``tasks.py``
is, when Django starts: apps.py). Priorities -100..100 map onto cogman's two families: those from
``OPTIONS["HIGH_PRIORITY_MIN"]`` (default 0) up go high, the others low. ``run_after`` is cogman's ``eta``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from traceback import format_exception
from typing import Any

from django.utils import timezone

from cogman.app import App
from cogman.contrib.django.project import DjangoApp, project_app
from cogman.contrib.django.results import read_result
from cogman.contrib.django.tasks_api import (
    DEFAULT_TASK_QUEUE_NAME,
    TASK_MAX_PRIORITY,
    TASK_MIN_PRIORITY,
    BaseTaskBackend,
    InvalidTask,
    InvalidTaskBackend,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultStatus,
    task_enqueued,
    task_finished,
    task_started,
)
from cogman.priority import Priority
from cogman.task import TaskContext as CogmanContext

OPTIONS = ("HIGH_PRIORITY_MIN",)


class CogmanTask(Task):
    """A ``django.tasks`` Task with ``enqueue_on_commit``: the ``@task`` decorator makes these on this backend."""

    def enqueue_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``enqueue(*args, **kwargs)`` once the current transaction of the default database commits (at once
        outside a transaction); nothing is sent if it rolls back."""
        from django.db import transaction

        transaction.on_commit(partial(self.enqueue, *args, **kwargs))


class CogmanBackend(BaseTaskBackend):
    task_class = CogmanTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = dict(self.options)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]: unknown OPTIONS {', '.join(unknown)} for CogmanBackend; known: "
                f"{', '.join(OPTIONS)} (cogman's own settings are COGMAN_* settings)"
            )
        self.high_priority_min = options.get("HIGH_PRIORITY_MIN", 0)
        if type(self.high_priority_min) is not int or not (
            TASK_MIN_PRIORITY <= self.high_priority_min <= TASK_MAX_PRIORITY + 1
        ):
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]: OPTIONS HIGH_PRIORITY_MIN must be a whole number from {TASK_MIN_PRIORITY} to "
                f"{TASK_MAX_PRIORITY + 1}, got {self.high_priority_min!r}"
            )
        if self.queues != {DEFAULT_TASK_QUEUE_NAME}:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]: cogman routes tasks by priority (two queue families), not by queue name: "
                f"leave QUEUES out (or [{DEFAULT_TASK_QUEUE_NAME!r}]), got {sorted(self.queues)}"
            )

    @property
    def app(self) -> DjangoApp:
        return project_app()

    def priority_of(self, task: Task) -> Priority:
        return Priority.HIGH if task.priority >= self.high_priority_min else Priority.LOW

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        register(self.app, task)

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        eta = task.run_after
        if eta is not None and timezone.is_naive(eta):
            eta = timezone.make_aware(eta)  # USE_TZ = False: the project's TIME_ZONE
        sent = self.app.send_task(task.module_path, args, kwargs, priority=self.priority_of(task), eta=eta)
        result = TaskResult(
            task=task,
            id=sent.id,
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        return read_result(self.app, result_id, self.alias)


def register(app: App, task: Task) -> None:
    """Register ``task`` with the cogman app under its module path, once; the handler runs the function."""
    name = task.module_path
    known = app.tasks.get(name)
    if known is not None:
        django_task = getattr(known.fn, "django_task", None)
        if django_task is not None and django_task.func is task.func:
            return
        raise InvalidTask(f"a cogman task named {name!r} is already registered with app {app.name!r}")
    app.task(name=name, bind=True)(handler(task))


def handler(task: Task) -> Callable[..., Any]:
    """What the worker calls: ``task``'s function, with Django's task signals and, for ``takes_context``,
    a TaskContext. It takes cogman's context first (``bind``), so its signature is the function's with a
    leading ``ctx`` (or the function's own, whose ``context`` takes that place), for cogman's argument checks."""

    def run(ctx: CogmanContext, *args: Any, **kwargs: Any) -> Any:
        now = timezone.now()
        result = TaskResult(
            task=task,
            id=ctx.original_task_id,
            status=TaskResultStatus.RUNNING,
            enqueued_at=None,
            started_at=now,
            finished_at=None,
            last_attempted_at=now,
            args=list(args),
            kwargs=kwargs,
            backend=task.backend,
            errors=[],
            worker_ids=[ctx.task_id],
        )
        task_started.send(CogmanBackend, task_result=result)
        try:
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
        except BaseException as exc:  # recorded failed by the worker, which this re-raises to
            object.__setattr__(result, "finished_at", timezone.now())
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            kind = type(exc)
            path = f"{kind.__module__}.{kind.__qualname__}"
            result.errors.append(TaskError(exception_class_path=path, traceback="".join(format_exception(exc))))
            task_finished.send(CogmanBackend, task_result=result)
            raise
        object.__setattr__(result, "finished_at", timezone.now())
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        object.__setattr__(result, "_return_value", value)
        task_finished.send(CogmanBackend, task_result=result)
        return value

    signature = inspect.signature(task.func)
    if not task.takes_context:
        ctx = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_ONLY)
        signature = signature.replace(parameters=[ctx, *signature.parameters.values()])
    run.__signature__ = signature  # type: ignore[attr-defined]
    run.__name__ = run.__qualname__ = task.func.__qualname__
    run.__module__ = task.func.__module__
    run.django_task = task  # type: ignore[attr-defined]
    return run
