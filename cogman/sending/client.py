"""Client: records and publishes task attempts, and hears back from the broker about them.

Order is what makes it safe: a record is written ``initiated`` (a retry attempt: ``retry``) before its
message is published, and moved to ``queued`` only once the broker confirmed it. A message parked in the
offline outbox stays unconfirmed until the broker takes it, and the client renews a lease on its record
meanwhile, so no re-enqueue sweep publishes it a second time; one the broker never takes is recorded
``failed`` with why.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cogman.backends.base import Backend
from cogman.brokers.base import Broker, Receipt
from cogman.config.settings import Config
from cogman.errors import BrokerUnavailable, PublishError
from cogman.message import Message
from cogman.middleware.base import MiddlewareStack
from cogman.priority import Priority
from cogman.record import TaskRecord, utcnow
from cogman.sending.background import BackgroundSender
from cogman.sending.ids import new_task_id
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.sending.reenqueue import Sweeper

log = logging.getLogger("cogman.client")

#: Retry attempt ids derive from the failed attempt's id, so a redelivered failure spawns the same one.
RETRY_NAMESPACE = uuid.UUID("6f1c1d2e-9a4b-4c7e-8f3a-2b5d7e9c1a04")


def retry_task_id(failed_task_id: str) -> str:
    return str(uuid.uuid5(RETRY_NAMESPACE, failed_task_id))


def new_record(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    priority: Priority,
    retry: int,
    primary_key: str | None,
    task_id: str | None = None,
    eta: datetime | None = None,
    expires: datetime | None = None,
) -> TaskRecord:
    task_id = task_id or new_task_id()
    now = utcnow()
    return TaskRecord(
        task_id=task_id,
        name=name,
        original_task_id=task_id,
        priority=priority,
        payload={"args": list(args), "kwargs": kwargs},
        status=Status.INITIATED,
        primary_key=primary_key,
        retry=retry,
        created_at=now,
        updated_at=now,
        eta=eta,
        expires=expires,
    )


class Client:
    """Sends first attempts and retry attempts; is the broker's PublishListener."""

    def __init__(self, broker: Broker, backend: Backend, middleware: MiddlewareStack, config: Config) -> None:
        self.broker = broker
        self.backend = backend
        self.middleware = middleware
        self.config = config
        #: The worker's re-enqueue sweeper, woken on every (re)connection; None in a pure client.
        self.sweeper: Sweeper | None = None
        self._leases: LeaseKeeper | None = None
        self._leases_lock = threading.Lock()
        #: The lean profile's background sender (cogman/sending/background.py); None by default and when
        #: eager (each send runs inline there).
        lean = config.profile == "lean" and not config.eager
        self.background = BackgroundSender(backend, broker, self.abandoned, config) if lean else None
        broker.set_listener(self)

    def send(
        self,
        records: Sequence[TaskRecord],
        messages: Sequence[Message] | None = None,
        *,
        wait_confirmed: bool | None = None,
        recorded: bool = False,
    ) -> Receipt:
        """Record new first attempts, then publish them (confirms pipelined for the whole batch).

        The task log is the commit point: once the records are in the backend, a crash cannot lose the
        tasks (re-enqueue republishes what stays unconfirmed), so by default (``send_mode="recorded"``)
        this returns without waiting for RabbitMQ's confirms. It waits for them when asked
        (``wait_confirmed``, ``send_mode="confirmed"``) and whenever the records could not be written
        (parked in memory while the backend is away): the broker is then what keeps the task.
        ``recorded``: the records are in the store already (a unique send's ``create_unique``)."""
        if messages is None:
            messages = [Message.for_record(record, retries_left=record.retry) for record in records]
        with self.middleware.sending(messages[0].name if messages else "", messages):
            for message in messages:
                self.middleware.before("before_send", message)
            if self._leases is None:
                self._keep_leases()
            if wait_confirmed is None:
                wait_confirmed = self.config.send_mode == "confirmed"
            if recorded:
                receipt = self.broker.publish(messages, wait=wait_confirmed)
            elif wait_confirmed:
                self.backend.create(records)
                receipt = self.broker.publish(messages, wait=True)
            elif self.background is not None:
                receipt = self.background.submit(records, messages)
            else:
                receipt = self._send_recorded(records, messages)
            for message in messages:
                self.middleware.after("after_send", message)
        return receipt

    def _send_recorded(self, records: Sequence[TaskRecord], messages: Sequence[Message]) -> Receipt:
        """The publish goes out while the backend writes the records (one round trip's wait instead of
        two). A worker may then start a task before its record lands; the backend keeps the worker's
        statuses and applies them when the record is created (docs/guarantees.md)."""
        receipts: list[Receipt] = []
        durable = self.backend.create(
            records, meanwhile=lambda: receipts.append(self.broker.publish(messages, wait=False))
        )
        receipt = receipts[0]
        if not durable:
            log.warning("task records parked in memory (backend unreachable): waiting for the broker's confirms")
            receipt.wait(self.config.request_timeout)  # raises PublishError naming a refusal
        return receipt

    def spawn_retry(
        self, failed: Message, original_task_id: str, failed_attempt: int, countdown: float | None = None
    ) -> tuple[Message, Receipt | None] | None:
        """Record and publish the next attempt of a failed one if the chain's budget allows; None when
        spent. The attempt's id derives from the failed one's, so doing this twice (a redelivered
        failure) spends the budget once. The receipt says when the broker confirmed it; None when the
        publish raised: the attempt's record stays ``retry`` and re-enqueue republishes it.

        ``countdown`` (seconds, the retry backoff) delays the attempt; it keeps the failed one's
        ``expires``."""
        now = utcnow()
        attempt = TaskRecord(
            task_id=retry_task_id(failed.task_id),
            name=failed.name,
            original_task_id=original_task_id,
            priority=failed.priority,
            payload={"args": list(failed.args), "kwargs": failed.kwargs or {}},
            status=Status.RETRY,
            primary_key=failed.primary_key,
            retry=0,
            attempt=failed_attempt + 1,
            created_at=now,
            updated_at=now,
            eta=now + timedelta(seconds=countdown) if countdown else None,
            expires=failed.expires,
        )
        left = self.backend.spawn_retry(original_task_id, attempt)
        if left is None:
            return None
        message = Message.for_record(attempt, retries_left=left)
        with self.middleware.sending(message.name, [message]) as sending:
            self.middleware.before("before_send", message)
            self._keep_leases()
            try:
                receipt = self.broker.publish([message])
            except (BrokerUnavailable, PublishError) as exc:
                sending.failed(exc)
                log.warning(
                    "retry %s of task %s recorded but not published (%s); re-enqueue will publish it",
                    message.task_id,
                    failed.task_id,
                    exc,
                )
                return message, None
            self.middleware.after("after_send", message)
        return message, receipt

    # PublishListener

    def connected(self) -> None:
        """A (re)connection: what a crashed client left unconfirmed can be sent now. A worker's sweeper
        is woken; a pure client runs a pass only with ``re_enqueue=True``."""
        if self.sweeper is not None:
            self.sweeper.wake()
        elif self.config.re_enqueue:
            from cogman.sending.reenqueue import re_enqueue

            threading.Thread(
                target=re_enqueue, args=(self.backend, self.broker, self.config), name="cogman-re-enqueue", daemon=True
            ).start()

    def confirmed(self, messages: Sequence[Message]) -> None:
        """First attempts and retry attempts alike: confirmed means ``queued`` (a Go record's ``retry``
        outranks it and stays, as in Go)."""
        ids = [m.task_id for m in messages if m.raw_body is None]
        if len(ids) < len(messages):
            for message in messages:
                if message.raw_body is not None:
                    self.backend.go_records().update(message.task_id, Status.QUEUED)
            if not ids:
                return
        self.backend.transition_many(ids, Status.QUEUED)

    def close(self) -> None:
        if self.background is not None:
            self.background.close(self.config.close_timeout)
        if self._leases is not None:
            self._leases.stop()

    def _keep_leases(self) -> None:
        if self._leases is None:
            with self._leases_lock:
                if self._leases is None:
                    from cogman.sending.reenqueue import child_grace

                    grace = self.config.re_enqueue_grace
                    self._leases = LeaseKeeper(self.broker, self.backend, grace, child_grace(self.config))

    def abandoned(self, messages: Sequence[Message], reason: str) -> None:
        for message in messages:
            log.error("task %s (%s) abandoned, never published: %s", message.task_id, message.name, reason)
            if message.raw_body is not None:
                self.backend.go_records().update(message.task_id, Status.FAILED, fail_error=f"not published: {reason}")
            else:
                self.backend.transition(message.task_id, Status.FAILED, fail_error=f"not published: {reason}")


class LeaseKeeper:
    """Renews the re-enqueue lease of every record whose message this process still holds unconfirmed
    (a long broker outage), every third of ``shortest`` (the child grace: the soonest a sweep may take
    one of its records), so no sweep republishes what the outbox will send. Idle (one cheap call, no
    I/O) when nothing is unconfirmed."""

    def __init__(self, broker: Broker, backend: Backend, grace: float, shortest: float | None = None) -> None:
        self.broker = broker
        self.backend = backend
        self.grace = grace
        self.every = (grace if shortest is None else min(grace, shortest)) / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cogman-leases", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(max(0.05, self.every)):
            try:
                held = self.broker.unconfirmed_ids()
                if held:
                    self.backend.renew_leases(held, self.grace)
            except BaseException:
                log.exception("could not renew the re-enqueue leases of unconfirmed messages; trying again")

    def stop(self) -> None:
        self._stop.set()
