"""How one delivery is run: every outcome a task can have, on one screen.

The order of the steps is the at-least-once contract: the outcome is recorded first, the message acked
last, so a worker killed anywhere in between leaves the message to be redelivered. A retry attempt is
published before the failing attempt is recorded ``failed``, so no moment exists where the chain looks
finished while a retry is still to come.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Coroutine
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cogman.errors import PoisonMessage
from cogman.message import Message, header_task_id
from cogman.status import Status
from cogman.task import Task, TaskContext

if TYPE_CHECKING:
    from cogman.app import App
    from cogman.brokers.base import Consumer, Delivery

log = logging.getLogger("cogman.worker")


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    SKIPPED = "skipped"  #: a redelivery of a task that already finished


def execute(app: App, consumer: Consumer, delivery: Delivery, loop: EventLoopThread | None) -> Outcome:
    message, outcome = _execute(app, consumer, delivery, loop)
    app.middleware.after("after_outcome", message, outcome.value)
    return outcome


def _execute(
    app: App, consumer: Consumer, delivery: Delivery, loop: EventLoopThread | None
) -> tuple[Message | None, Outcome]:
    backend = app.backend
    message: Message | None = None
    try:
        if delivery.poison is not None:  # the transport could not read it: never decoded, never run
            raise PoisonMessage(delivery.poison, header_task_id(delivery.headers))
        message = Message.decode(delivery.body, delivery.headers)
        task = app.tasks.get(message.name)
        if task is None:
            raise PoisonMessage(f"unhandled task: {message.name}", message.task_id)
        try:
            task.check_arguments(message.args, message.kwargs or {})
        except PoisonMessage as exc:
            raise PoisonMessage(exc.reason, message.task_id) from None
    except PoisonMessage as poison:
        log.error("dead-lettering message from %s: %s", delivery.queue, poison.reason)
        if poison.task_id is not None:
            backend.transition(poison.task_id, Status.FAILED, fail_error=poison.reason)
        consumer.dead_letter(delivery, poison.reason)
        return message, Outcome.DEAD_LETTERED

    record = backend.transition(message.task_id, Status.IN_PROGRESS)
    if record is not None and record.status.is_final:
        log.info("task %s already %s; acking its redelivery without running it", message.task_id, record.status)
        consumer.ack(delivery)
        return message, Outcome.SKIPPED

    app.middleware.before("before_execute", message)
    started = time.perf_counter()
    try:
        result = run_handler(task, message, loop)
        json.dumps(result, allow_nan=False)
    except Exception as exc:
        duration = time.perf_counter() - started
        error = f"{type(exc).__name__}: {exc}"
        retry = app.client.retry(message)
        backend.transition(message.task_id, Status.FAILED, fail_error=error, duration=duration)
        app.middleware.after("after_execute", message, exception=exc)
        consumer.ack(delivery)
        if retry is not None:
            log.warning("task %s (%s) failed, retrying as %s: %s", message.task_id, message.name, retry.task_id, error)
            return message, Outcome.RETRIED
        log.error("task %s (%s) failed: %s", message.task_id, message.name, error)
        return message, Outcome.FAILED

    duration = time.perf_counter() - started
    backend.transition(message.task_id, Status.SUCCESS, result=result, duration=duration)
    app.middleware.after("after_execute", message, result=result)
    consumer.ack(delivery)
    return message, Outcome.SUCCEEDED


def run_handler(task: Task[Any, Any], message: Message, loop: EventLoopThread | None) -> Any:
    args: tuple[Any, ...] = message.args
    if task.bind:
        context = TaskContext(
            task_id=message.task_id,
            name=message.name,
            original_task_id=message.original_task_id,
            attempt=message.attempt,
            retries_left=message.retries_left,
            primary_key=message.primary_key,
        )
        args = (context, *args)
    outcome = task.fn(*args, **(message.kwargs or {}))
    if task.is_async:
        if loop is None:
            raise RuntimeError(f"async task {task.name} needs the worker's event loop")
        return loop.run(outcome)
    return outcome


class EventLoopThread:
    """One asyncio loop in its own thread; handler threads hand it coroutines and wait for them.

    The waiting handler thread keeps its slot, so async tasks count against ``concurrency`` like
    sync ones.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="cogman-asyncio", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
