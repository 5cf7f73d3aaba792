"""The lean profile's sender (``Config.profile="lean"``): ``.delay()`` hands its task here and returns.

One thread takes what waits, up to ``BATCH`` tasks at a time, and sends it the way a ``send_many`` does:
the records in one pipelined create, the batch's messages published in one pass while Redis runs it
(``Broker.publish_each``: each message settles its own hand-off, which is its receipt). What is
traded, as in Dramatiq and Celery: ``.delay()`` returns before the record is written and the message
published, so a crash (SIGKILL, power loss) of the sending process loses what it had not sent yet.

What is not: the buffer is bounded (``send_buffer_limit`` tasks; a send into a full one waits up to
``request_timeout``, then raises ``SendBufferFull``, nothing recorded), ``waiting`` reads its depth,
``close()`` (``app.close()``, interpreter exit) sends what waits before the broker's outbox drains
(what is left after ``close_timeout`` is logged, never recorded nor published), and a batch that fails
is logged and its records marked ``failed`` (``Client.abandoned``) with the reason, which the
hand-off's ``wait_sent()`` raises. Nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cogman.brokers.base import OneShot, Receipt
from cogman.errors import PublishError, SendBufferFull

if TYPE_CHECKING:
    from cogman.backends.base import Backend
    from cogman.brokers.base import Broker
    from cogman.config.settings import Config
    from cogman.message import Message
    from cogman.record import TaskRecord

log = logging.getLogger("cogman.client")

#: Most tasks one background send takes (the benchmark's ``send_many`` batch).
BATCH = 500

Abandon = Callable[["Sequence[Message]", str], None]


class Handoff(Receipt):
    """What ``.delay()`` returns in the lean profile. It counts one settlement a message, made by the
    broker as it confirms or refuses it (the hand-off is those messages' receipt), and one for the
    records, made by the background thread once their write returned: so ``wait_sent()`` is True only
    when the tasks are both recorded and confirmed, which a workflow step's ack relies on.
    ``recorded()`` tells when the records were written (or the send failed), which ``AsyncResult``
    waits for before it reads a record it cannot find."""

    __slots__ = ("_patience", "_recorded", "messages", "records")

    def __init__(self, records: Sequence[TaskRecord], messages: Sequence[Message], patience: float) -> None:
        super().__init__(len(messages) + 1)
        self.records = records
        self.messages = messages
        self._patience = patience
        self._recorded = OneShot()

    def records_done(self, failure: str | None = None) -> None:
        """The records' write returned (``failure``: it could not be made, and ``wait_sent()`` raises
        that reason even once the broker confirmed the messages)."""
        self.settle(1, failure)
        self._recorded.set()

    def recorded(self) -> bool:
        """True once the background thread has written the records (or given up on them); waits up to
        ``request_timeout + close_timeout``."""
        return self._recorded.wait(self._patience)


class BackgroundSender:
    """The hand-offs waiting to be sent, and the thread sending them (started with the first)."""

    def __init__(self, backend: Backend, broker: Broker, abandon: Abandon, config: Config) -> None:
        self.backend = backend
        self.broker = broker
        self.abandon = abandon
        self.limit = config.send_buffer_limit
        self.request_timeout = config.request_timeout
        self.patience = config.request_timeout + config.close_timeout
        self._waiting: deque[Handoff] = deque()
        self._count = 0
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def waiting(self) -> int:
        """Tasks handed over and not yet recorded and published (the batch being sent included)."""
        with self._lock:
            return self._count

    def submit(self, records: Sequence[TaskRecord], messages: Sequence[Message]) -> Handoff:
        handoff = Handoff(records, messages, self.patience)
        deadline = time.monotonic() + self.request_timeout
        with self._lock:
            while self._count and self._count + len(records) > self.limit and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SendBufferFull(
                        f"{self._count} task(s) wait to be recorded and published (send_buffer_limit="
                        f"{self.limit}) after request_timeout={self.request_timeout:g} s; "
                        f"{len(records)} task(s) of {records[0].name} not sent"
                    )
                self._lock.wait(remaining)
            if self._closed:
                self._send([handoff])
                return handoff
            self._waiting.append(handoff)
            self._count += len(records)
            self._lock.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cogman-lean-sender", daemon=True)
                self._thread.start()
        return handoff

    def close(self, timeout: float) -> None:
        """Send what waits (up to ``timeout``), then stop the thread; what is left is logged, abandoned."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            left, self._waiting = list(self._waiting), deque()
        if left:
            reason = f"not sent within close_timeout={timeout:g} s"
            log.error("lean profile: %d task(s) %s", sum(len(h.records) for h in left), reason)
            self._give_up(left, reason)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if not self._waiting:
                    return
                batch: list[Handoff] = []
                taken = 0
                while self._waiting and taken < BATCH:
                    batch.append(self._waiting.popleft())
                    taken += len(batch[-1].records)
            try:
                self._send(batch)
            except BaseException as exc:  # the thread's top level: fail this batch loudly, send the next
                log.exception("lean profile: the background sender failed on %d task(s)", taken)
                self._give_up([h for h in batch if not h.done], f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._count -= taken
                    self._lock.notify_all()

    def _send(self, batch: list[Handoff]) -> None:
        """The records in one create, the batch's messages published while Redis runs it, each settling
        its own hand-off (a refused message fails its hand-off only); like ``send_mode="recorded"``, the
        confirms are awaited only when the records could not be written."""
        published: list[bool] = []

        def publish() -> None:
            messages = [message for handoff in batch for message in handoff.messages]
            self.broker.publish_each(messages, [handoff for handoff in batch for _ in handoff.messages])
            published.append(True)

        records = [record for handoff in batch for record in handoff.records]
        try:
            durable = self.backend.create(records, meanwhile=publish)
        except Exception as exc:  # the create was refused (a script error), or the publish raised
            reason = f"{type(exc).__name__}: {exc}"
            log.error("lean profile: sending %d task(s) failed (%s)", len(records), reason, exc_info=exc)
            if not published:
                self._give_up(batch, reason)
                return
            for handoff in batch:  # published: they run, unrecorded; wait_sent() raises the reason
                handoff.records_done(reason)
            return
        for handoff in batch:
            handoff.records_done()
            if not durable:  # parked in memory: the broker is what keeps these tasks
                with contextlib.suppress(PublishError):  # a refusal fails its own hand-off
                    handoff.wait(self.request_timeout)

    def _give_up(self, handoffs: list[Handoff], reason: str) -> None:
        for handoff in handoffs:
            try:
                self.abandon(handoff.messages, reason)
            except Exception:
                log.exception("lean profile: could not mark %d task(s) failed", len(handoff.messages))
            handoff.settle(len(handoff.messages) + 1, reason)
            handoff._recorded.set()
