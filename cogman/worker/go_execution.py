"""How a Go-format delivery is run (issue 22): cogman's contract, Go's records.

The handler of a task declared ``wire="go"`` receives the body's bytes. Everything about running it is
cogman's (:mod:`cogman.worker.execution`): time limits, middleware and metrics, and the ack only once the
outcome is in the backend (and a retry's message is confirmed). The record is Go's
(``Backend.go_records()``): ``in_progress`` when it starts, then ``success`` with ``Duration``, or
``failed`` with ``FailError``. A failure is retried the Go way when the chain's original still has
``Retry`` left: a new attempt in status ``retry`` with the same ``OriginalTaskID``, the original's
``Retry`` taken down by one, the raw body republished at once with the two headers. Each of those writes
is one atomic step, so the original keeps its ``failed`` (Go's decrement overwrote it).

The retry attempt's id derives from the failed attempt's (as cogman's retries do), so a failure that is
delivered again finds its retry recorded and publishes it again instead of spending the budget twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cogman.brokers.base import Receipt
from cogman.errors import BrokerUnavailable, PoisonMessage, PublishError
from cogman.gowire.record import go_retry_id
from cogman.gowire.wire import is_go_delivery
from cogman.message import Message
from cogman.priority import Priority
from cogman.record import clip
from cogman.sending.go_send import message_for_record, message_from_delivery
from cogman.status import Status
from cogman.worker.delivery_limits import looping_after
from cogman.worker.handlers import Chain, EventLoopThread, run_handler

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cogman.backends.base import Backend
    from cogman.brokers.base import Delivery
    from cogman.gowire.record import GoRecord
    from cogman.gowire.store import GoRecords, GoStarted
    from cogman.sending.host import SendingHost
    from cogman.task import Task

log = logging.getLogger("cogman.worker")

#: Runs a backend call, waiting out an outage (``Settler.until_recorded``).
UntilRecorded = Callable[[Callable[[], Any], str], Any]
#: Acks once the backend holds the outcome and ``after`` settled (``Settler.ack_when_durable``).
AckWhenDurable = Callable[..., None]


class GoRunner:
    """Runs the Go-format deliveries of one worker's executor; returns the outcome's name."""

    def __init__(
        self,
        app: SendingHost,
        loop: EventLoopThread | None,
        until_recorded: UntilRecorded,
        ack_when_durable: AckWhenDurable,
    ) -> None:
        self.app = app
        self.loop = loop
        self.until_recorded = until_recorded
        self.ack_when_durable = ack_when_durable

    def run(self, delivery: Delivery, message: Message, task: Task[Any, Any]) -> str:
        records = self.app.backend.go_records()
        task_id = message.task_id
        token = uuid.uuid4().hex  # names this delivery: its start counts once however often it is written
        started: GoStarted | None = self.until_recorded(
            lambda: records.start(task_id, token), f"start Go task {task_id}"
        )
        record = None if started is None else started.record
        if record is not None and record.status.is_final:
            log.info("Go task %s already %s; acking its redelivery without running it", task_id, record.status)
            self.ack_when_durable(delivery, after=self._resend_retry(records, record))
            return "skipped"
        looping = looping_after(delivery, None if started is None else started.starts, self.app.config)
        if looping is not None:  # it killed its worker each time: dead-lettered by the executor
            raise PoisonMessage(looping, task_id)
        original = record.original_task_id if record is not None else task_id
        is_original = original == task_id
        chain = Chain(original, 1 if is_original else 2, record.retry if record is not None and is_original else 0)
        self.app.middleware.before("before_execute", message)
        begun = time.perf_counter()
        try:
            run_handler(task, message, chain, self.loop)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the attempt fails, the thread lives on
            return self._failed(delivery, message, records, record, exc, time.perf_counter() - begun)
        duration = time.perf_counter() - begun
        success = f"record the success of Go task {task_id}"
        self.until_recorded(lambda: records.update(task_id, Status.SUCCESS, duration=duration), success)
        self.app.middleware.after("after_execute", message, result=None)
        self.ack_when_durable(delivery)
        log.info("Go task %s[%s] succeeded in %.4fs", message.name, task_id, duration)
        return "succeeded"

    def _failed(
        self,
        delivery: Delivery,
        message: Message,
        records: GoRecords,
        record: GoRecord | None,
        exc: BaseException,
        duration: float,
    ) -> str:
        task_id = message.task_id
        error = clip(go_error(exc), self.app.config.max_error_size)
        self.app.middleware.after("after_execute", message, exception=exc)
        retry: GoRecord | None = None
        if record is not None:  # no record (a message sent without one): no budget to read, as in Go
            retry = self._spawn_retry(records, record)
        self.until_recorded(
            lambda: records.update(task_id, Status.FAILED, fail_error=error), f"record the failure of Go task {task_id}"
        )
        what = f"retrying as {retry.task_id}" if retry is not None else "no retry left"
        log.error("Go task %s[%s] failed in %.4fs (%s): %s", message.name, task_id, duration, what, error, exc_info=exc)
        receipt = None if retry is None else self._publish(retry)
        if retry is not None and receipt is None:
            self.ack_when_durable(delivery, after=_refused(f"retry {retry.task_id} of Go task {task_id} not published"))
            return "retried"
        self.ack_when_durable(delivery, after=receipt)
        return "failed" if retry is None else "retried"

    def _spawn_retry(self, records: GoRecords, record: GoRecord) -> GoRecord | None:
        """The retry attempt of ``record`` if its chain's budget allows, recorded ``retry``; None when
        spent. Found rather than made again when this failure was handled before."""
        retry_id = go_retry_id(record.task_id)
        found: GoRecord | None = self.until_recorded(lambda: records.get(retry_id), f"read Go task {retry_id}")
        if found is not None:
            return found
        left = self.until_recorded(
            lambda: records.take_retry(record.original_task_id), f"take a retry of Go task {record.original_task_id}"
        )
        if left is None:
            return None
        attempt = record.retry_attempt(retry_id)
        self.until_recorded(lambda: records.create(attempt), f"record the retry {retry_id} of Go task {record.task_id}")
        return attempt

    def _resend_retry(self, records: GoRecords, record: GoRecord) -> Receipt | None:
        """A failed attempt delivered again (its ack was lost, or its retry's publish failed): publish
        its retry again if one was recorded and has not finished (a duplicate at worst: at least once)."""
        if record.status is not Status.FAILED:
            return None
        retry_id = go_retry_id(record.task_id)
        retry: GoRecord | None = self.until_recorded(lambda: records.get(retry_id), f"read Go task {retry_id}")
        if retry is None or retry.status is not Status.RETRY:
            return None
        return self._publish(retry)

    def _publish(self, retry: GoRecord) -> Receipt | None:
        try:
            return self.app.broker.publish([message_for_record(retry)])
        except (BrokerUnavailable, PublishError) as exc:
            log.warning("retry %s of a Go task recorded, not published (%s); the failure goes back", retry.task_id, exc)
            return None


def go_error(exc: BaseException) -> str:
    """A failure's ``FailError`` as Go writes it: the error's text (``err.Error()``), the exception's
    message here; its type's name when it has none."""
    return str(exc) or type(exc).__name__


def decode(body: bytes, headers: Mapping[str, Any], properties: Mapping[str, Any], priority: Priority) -> Message:
    """A delivery's message: Go's format (``TaskID`` and ``TaskName`` headers, no ``content_type``) or
    cogman's JSON (``Message.decode``, PoisonMessage when it can never run)."""
    if is_go_delivery(headers, properties):
        return message_from_delivery(body, headers, priority)
    return Message.decode(body, dict(headers))


def task_of(tasks: Mapping[str, Task[Any, Any]], message: Message) -> Task[Any, Any]:
    """The task that runs ``message``; PoisonMessage naming it when there is none for its format: a
    Go-format message runs only a task declared ``wire="go"``, a cogman one only a cogman task."""
    task = tasks.get(message.name)
    go = message.raw_body is not None
    if go and (task is None or task.wire != "go"):
        why = "no task with that name" if task is None else "the task is not declared wire='go'"
        raise PoisonMessage(f"unhandled Go-format task {message.name!r}: {why} on this worker", message.task_id)
    if task is None:
        raise PoisonMessage(f"unhandled task: {message.name}", message.task_id)
    if not go and task.wire == "go":
        why = f"task {message.name} is declared wire='go': a cogman message cannot run it"
        raise PoisonMessage(why, message.task_id)
    return task


def record_failed(backend: Backend, message: Message | None, task_id: str, error: str) -> None:
    """Record an attempt that can never run as failed, in Go's record for a Go-format message."""
    if message is not None and message.raw_body is not None and message.task_id == task_id:
        backend.go_records().update(task_id, Status.FAILED, fail_error=error)
    else:
        backend.transition(task_id, Status.FAILED, fail_error=error, returning=False)


def _refused(reason: str) -> Receipt:
    """A receipt settled as refused: the failed attempt's delivery goes back (counted), and its
    redelivery publishes the recorded retry (``_resend_retry``)."""
    receipt = Receipt(1)
    receipt.settle(failure=reason)
    return receipt
