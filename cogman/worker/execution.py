"""How one delivery is run: every outcome a task can have, on one screen (:meth:`Executor._execute`).

The order of the steps is the at-least-once contract. The outcome is written first and the message is
acked last, and only once the backend holds the outcome (:meth:`Backend.durable`: a write parked in
memory during an outage holds the ack back) and, for a failure, once the retry attempt's message is
confirmed by the broker. A worker killed anywhere in between leaves the message unacked, so the broker
redelivers it, and the redelivery finds the record final (acked, skipped) or runs the task again.

The chain a task belongs to (original id, attempt number, retry budget) is read from the backend when
the attempt starts, never trusted from the message body: anyone able to publish could otherwise point
another chain's ``latest_attempt_id`` at their own message.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Any

from cogman.backoff import Retry, RetryDecision, decide
from cogman.delays import expired_error, seconds_until
from cogman.errors import PoisonMessage, ResultRejected
from cogman.message import Message, header_task_id
from cogman.record import clip
from cogman.sending.ids import new_token
from cogman.status import Status
from cogman.worker.admission import Admission
from cogman.worker.cancelling import AttemptCancelled, CancelWatch
from cogman.worker.delivery_limits import looping_reason
from cogman.worker.first_run import runs_first
from cogman.worker.go_execution import GoRunner, decode, record_failed, task_of
from cogman.worker.handlers import EventLoopThread, chain_of, check_result, run_handler
from cogman.worker.settling import GiveBack, Settler
from cogman.workflows import steps as workflow

if TYPE_CHECKING:
    from collections.abc import Callable

    from cogman.backends.base import Started
    from cogman.brokers.base import Consumer, Delivery, Receipt
    from cogman.sending.host import SendingHost
    from cogman.task import Task

log = logging.getLogger("cogman.worker")

#: How much of a result the success log line shows.
RESULT_SHOWN = 200


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    SKIPPED = "skipped"  #: a redelivery of a task that already finished (or was cancelled before it started)
    EXPIRED = "expired"  #: not started before its ``expires``: recorded failed, never run
    DELAYED = "delayed"  #: came before its ``eta``: sent back to wait in the broker
    REQUEUED = "requeued"  #: given back to the broker unfinished (a stopping worker, an unexpected error)
    CANCELLED = "cancelled"  #: cancelled while it ran: interrupted, not retried (worker/cancelling.py)


class Executor:
    """Runs deliveries for one worker and settles them; counts the acks it holds back."""

    def __init__(
        self, app: SendingHost, consumer: Consumer, loop: EventLoopThread | None, stopping: threading.Event
    ) -> None:
        self.app = app
        self.backend = app.backend
        self.consumer = consumer
        self.loop = loop
        self.stopping = stopping
        self._settler = Settler(self.backend, consumer, stopping)
        self._until_recorded = self._settler.until_recorded
        self._ack_when_durable = self._settler.ack_when_durable
        self.wait_for_room = self._settler.wait_for_room
        self._admission = Admission(app.backend, app.broker, self._settler, app.config.concurrency_lease)
        self._go = GoRunner(app, loop, self._until_recorded, self._ack_when_durable)  # Go-format deliveries
        self.cancels = CancelWatch(self.backend)

    @property
    def held(self) -> int:
        """Deliveries whose outcome is decided but not yet durable (or whose retry is unconfirmed)."""
        return self._settler.held

    def execute(self, delivery: Delivery) -> Outcome:
        """Settle one delivery; ``after_outcome`` always follows, with the message once decoded, so a
        hook that counts from ``before_execute`` to it (the in-progress gauge) never leaks."""
        message: Message | None = None
        try:
            try:
                message = self._decode(delivery)
                task = self._task_for(message)
            except PoisonMessage as poison:
                outcome = self._dead_letter(delivery, poison, message)
            else:
                outcome = self._admitted(delivery, message, task)
        except GiveBack:
            self.consumer.requeue(delivery)
            outcome = Outcome.REQUEUED
        except (Exception, SystemExit, KeyboardInterrupt, GeneratorExit) as exc:  # a middleware hook's too
            reason = f"unexpected {type(exc).__name__} while running a delivery from {delivery.queue}: {exc}"
            log.exception("%s; giving it back (at most max_redeliveries times)", reason)
            self.consumer.redeliver(delivery, reason)
            outcome = Outcome.REQUEUED
        self.app.middleware.after("after_outcome", message, outcome.value)
        return outcome

    def _execute(self, delivery: Delivery, message: Message, task: Task[Any, Any]) -> Outcome:
        if message.raw_body is not None:  # Go Cogman's format: cogman/worker/go_execution.py
            try:
                return Outcome(self._go.run(delivery, message, task))
            except PoisonMessage as poison:  # it killed its worker each time (delivery_limits.py)
                return self._dead_letter(delivery, poison, message)
        untimely = self._settle_untimely(delivery, message)
        if untimely is not None:
            return untimely
        first = runs_first(delivery, message, task, self.app.config.profile)  # lean: no start (first_run.py)
        started = None if first else self._start(message)
        if started is not None and started.status.is_final:
            return self._skip(delivery, message, started, "acking its redelivery without running it")
        looping = looping_reason(delivery, started, self.app.config)
        if looping is not None:
            log.error("task %s[%s] is not run again: %s", message.name, message.task_id, looping)
            return self._dead_letter(delivery, PoisonMessage(looping, message.task_id), message, started)
        chain = chain_of(message, started)

        self.app.middleware.before("before_execute", message)
        begun = time.perf_counter()
        try:
            run = partial(run_handler, task, message, chain, self.loop)  # called with the attempt's Running
            result = self.cancels.run(message.task_id, task.is_async, run)
            check_result(task, result, self.app.config.max_result_size)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the attempt fails, the thread lives on
            return self._failed(delivery, message, task, started, exc, time.perf_counter() - begun)
        duration = time.perf_counter() - begun
        self._until_recorded(
            lambda: self.backend.transition(
                message.task_id, Status.SUCCESS, result=result, duration=duration, returning=False
            ),
            f"record the success of task {message.task_id}",
        )
        self.app.middleware.after("after_execute", message, result=result)
        sent = self._continue(message, started, lambda: workflow.after_success(self.app, message, started, result))
        self._ack_when_durable(delivery, after=sent)
        if log.isEnabledFor(logging.INFO):
            shown = repr(result)
            shown = shown if len(shown) <= RESULT_SHOWN else shown[:RESULT_SHOWN] + "..."
            log.info("task %s[%s] succeeded in %.4fs: %s", message.name, message.task_id, duration, shown)
        return Outcome.SUCCEEDED

    def _start(self, message: Message) -> Started | None:
        token = new_token()  # names this delivery: its start counts once however often it is written
        return self._until_recorded(lambda: self.backend.start(message.task_id, token), f"start {message.task_id}")

    def _admitted(self, delivery: Delivery, message: Message, task: Task[Any, Any]) -> Outcome:
        """A task over its rate limit or concurrency waits in the broker, not here (admission.py); a slot
        it holds is freed once its outcome is recorded, whatever the outcome."""
        try:
            admitted = self._admission.admit(delivery, message, task)
        except PoisonMessage as poison:  # its key function cannot place these arguments
            return self._dead_letter(delivery, poison, message)
        if admitted.outcome is not None:
            return Outcome(admitted.outcome)
        try:
            return self._execute(delivery, message, task)
        finally:
            admitted.release()

    # The steps

    def _skip(self, delivery: Delivery, message: Message, started: Started, what: str) -> Outcome:
        """The record is final already: acked without recording an outcome (a workflow step resends what
        follows it, harmlessly)."""
        log.info("task %s already %s; %s", message.task_id, started.status, what)
        redo = self._continue(message, started, lambda: workflow.after_redelivery(self.app, message, started))
        self._ack_when_durable(delivery, after=redo)
        return Outcome.SKIPPED

    def _decode(self, delivery: Delivery) -> Message:
        if delivery.poison is not None:
            raise PoisonMessage(delivery.poison, header_task_id(delivery.headers))
        limit = self.app.config.max_message_size
        if len(delivery.body) > limit:
            raise PoisonMessage(f"body of {len(delivery.body)} bytes over max_message_size={limit}", None)
        return decode(delivery.body, delivery.headers, delivery.properties, delivery.priority)

    def _task_for(self, message: Message) -> Task[Any, Any]:
        task = task_of(self.app.tasks, message)
        try:
            task.check_arguments(message.args, message.kwargs or {})
        except PoisonMessage as exc:
            raise PoisonMessage(exc.reason, message.task_id) from None
        return task

    def _dead_letter(
        self, delivery: Delivery, poison: PoisonMessage, message: Message | None = None, started: Started | None = None
    ) -> Outcome:
        """The message can never run (or must not run again: ``delivery_limits.py``): it moves to the
        dead-letter queue (the consumer acks the source only once the copy is confirmed), and its
        record, when the task id is known, says why. A workflow step fails its workflow (what that
        sends waits for re-enqueue if unconfirmed)."""
        log.error("dead-lettering message from %s: %s", delivery.queue, poison.reason)
        if poison.task_id is not None:
            error = clip(poison.reason, self.app.config.max_error_size)
            self._until_recorded(
                lambda: record_failed(self.backend, message, poison.task_id or "", error),
                f"record the dead-lettering of task {poison.task_id}",
            )
        if message is not None and poison.task_id == message.task_id:
            self._continue(message, started, lambda: workflow.after_failure(self.app, message, started, poison.reason))
        self.consumer.dead_letter(delivery, poison.reason)
        return Outcome.DEAD_LETTERED

    def _failed(
        self,
        delivery: Delivery,
        message: Message,
        task: Task[Any, Any],
        started: Started | None,
        exc: BaseException,
        duration: float,
    ) -> Outcome:
        """The handler raised (or returned what cannot be recorded, never retried): spawn the retry attempt
        (if the task's policy and the budget allow) and publish it, record this attempt failed, and ack
        once both the record is durable and the retry is confirmed."""
        if isinstance(exc, AttemptCancelled):
            return self._cancelled(delivery, message, started, exc, duration)
        limit = self.app.config.max_error_size
        error = f"{type(exc).__name__}: {exc}"
        rejected = isinstance(exc, ResultRejected)
        trace = None if rejected else clip("".join(traceback.format_exception(exc)), limit, keep_end=True)
        self.app.middleware.after("after_execute", message, exception=exc)
        original_task_id, attempt = self._place_of(message, started)
        decision = (
            RetryDecision(False, why_not="a result the record cannot hold is never retried")
            if rejected
            else decide(task.retry_policy, exc, attempt)
        )
        spawned = None
        if decision.retry:
            spawned = self._until_recorded(
                lambda: self.app.client.spawn_retry(message, original_task_id, attempt, decision.countdown),
                f"spawn a retry of task {message.task_id}",
            )
            if spawned is None and isinstance(exc, Retry):
                error += ", but no retry is left (the chain's retry budget is spent)"
        error = clip(error, limit)
        self._until_recorded(
            lambda: self.backend.transition(
                message.task_id, Status.FAILED, fail_error=error, traceback=trace, duration=duration, returning=False
            ),
            f"record the failure of task {message.task_id}",
        )
        what = decision.why_not or "no retry left"
        if spawned is not None:
            what = f"retrying as {spawned[0].task_id} in {decision.countdown:g} s"
        log.error(
            "task %s[%s] failed in %.4fs (%s): %s", message.name, message.task_id, duration, what, error, exc_info=exc
        )
        if spawned is None:
            ended = self._continue(message, started, lambda: workflow.after_failure(self.app, message, started, error))
            self._ack_when_durable(delivery, after=ended)
            return Outcome.FAILED
        self._ack_when_durable(delivery, after=spawned[1])
        return Outcome.RETRIED

    def _cancelled(
        self, delivery: Delivery, message: Message, started: Started | None, exc: BaseException, duration: float
    ) -> Outcome:
        """Cancelled while it ran: its record says ``cancelled`` already (the cancel wrote it), no retry is
        spawned, and a workflow step ends its workflow as a failure would (a chain's later steps, a
        chord's callback: recorded, never run). Acked once that is durable."""
        self.app.middleware.after("after_execute", message, exception=exc)
        log.warning("task %s[%s] cancelled after %.4fs: %s", message.name, message.task_id, duration, exc)
        ended = self._continue(
            message, started, lambda: workflow.after_failure(self.app, message, started, "cancelled")
        )
        self._ack_when_durable(delivery, after=ended)
        return Outcome.CANCELLED

    def _settle_untimely(self, delivery: Delivery, message: Message) -> Outcome | None:
        """A task past its ``expires`` is recorded failed and acked, never run. One that came before its
        ``eta`` (clock skew, a foreign producer) goes back to the broker's delay for the rest and is
        acked once that copy is confirmed: never held here. None: it is due, run it."""
        now = time.time()
        if message.expires is not None and seconds_until(message.expires, now) <= 0:
            error = expired_error(message.expires)
            log.warning("task %s[%s] %s; it does not run", message.name, message.task_id, error)
            self._until_recorded(
                lambda: self.backend.transition(message.task_id, Status.FAILED, fail_error=error, returning=False),
                f"record the expiry of task {message.task_id}",
            )
            ended = self._continue(message, None, lambda: workflow.after_failure(self.app, message, None, error))
            self._ack_when_durable(delivery, after=ended)
            return Outcome.EXPIRED
        if message.eta is None or (early := seconds_until(message.eta, now)) <= 0:
            return None
        log.info("task %s[%s] came %.3f s early; it goes back to wait", message.name, message.task_id, early)
        waiting = self._settler.wait_in_broker(
            self.app.broker, delivery, message, "an early delivery could not be delayed again"
        )
        return Outcome.DELAYED if waiting else Outcome.REQUEUED

    def _place_of(self, message: Message, started: Started | None) -> tuple[str, int]:
        """(original id, attempt number) from the backend; read again if the start could not tell (an
        outage). A task with no record at all (a foreign producer) is its own chain, with no budget."""
        if started is not None:
            return started.original_task_id, started.attempt
        record = self._until_recorded(lambda: self.backend.get(message.task_id), f"read task {message.task_id}")
        return (record.original_task_id, record.attempt) if record is not None else (message.task_id, 1)

    def _continue(
        self, message: Message, started: Started | None, step_ended: Callable[[], Receipt | None]
    ) -> Receipt | None:
        """A workflow step sends what follows it (cogman/workflows/steps.py) before its ack; the ack then waits
        for that publish's receipt. Plain tasks pass through without I/O."""
        if not workflow.involved(message, started):
            return None
        receipt: Receipt | None = self._until_recorded(step_ended, f"continue the workflow of task {message.task_id}")
        return receipt
