"""The broker protocol: what the app and the worker need from a message transport, and nothing more.

A broker publishes with confirms, hands out consumers, and reports asynchronously what happened to the
messages it accepted (``PublishListener``), because a message parked in an offline outbox is confirmed
(or abandoned) long after ``publish`` returned. The memory broker and the RabbitMQ broker both implement
this, so the worker never knows which one it talks to.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cogman.errors import PublishError
from cogman.message import Message
from cogman.priority import Priority

log = logging.getLogger("cogman.brokers")

DEAD_LETTER_QUEUE = "cogman.dead_letter"
HEADER_DEAD_LETTER_REASON = "x-cogman-dead-letter-reason"
#: Set by RabbitMQ on deliveries from quorum queues: how often the message was returned before.
HEADER_DELIVERY_COUNT = "x-delivery-count"


def queue_names(priority: Priority, count: int, prefix: str = "") -> list[str]:
    """Cogman's queue names: ``high_priority_queue_0..count-1`` or ``low_priority_queue_0..count-1``,
    behind ``prefix`` (``Config.queue_prefix``) when there is one."""
    return [prefixed(prefix, f"{priority.value}_priority_queue_{index}") for index in range(count)]


def prefixed(prefix: str, name: str) -> str:
    """A queue or exchange name in an app's namespace: ``shop.high_priority_queue_0``."""
    return f"{prefix}.{name}" if prefix else name


@dataclass(slots=True)
class Delivery:
    """One received message, before it is decoded. ``tag`` is the transport's handle for ack/reject."""

    body: bytes
    headers: dict[str, Any]
    queue: str
    priority: Priority
    tag: Any = None
    redelivered: bool = False
    properties: dict[str, Any] = field(default_factory=dict)
    #: How often cogman gave this message back after an unexpected error (``Consumer.redeliver``).
    redeliveries: int = 0
    #: How often the broker handed this message out before and got it back unacked (a worker died, a
    #: connection dropped, a stopping worker returned it): RabbitMQ counts it on quorum queues only
    #: (``x-delivery-count``); 0 where nobody counts.
    returns: int = 0
    #: Set by the transport when the delivery can never run (undecodable properties, a ``compression``
    #: header, a body over ``max_message_size``): the worker dead-letters it with this reason.
    poison: str | None = None


class OneShot:
    """A ``threading.Event`` that is only ever set once and costs a lock until somebody waits: every
    ``.delay()`` makes one or two, and an Event (a Condition and its lock) was a sixth of a lean send's
    CPU. The Event is made by the first ``wait`` that finds it unset, under the lock ``set`` takes."""

    __slots__ = ("_event", "_lock", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None
        self._lock = threading.Lock()

    def set(self) -> None:
        with self._lock:
            self._set = True
            event = self._event
        if event is not None:
            event.set()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        with self._lock:
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


class Receipt:
    """What became of the messages of one ``publish`` call: each is confirmed, or refused with a reason.

    The broker settles it from its own threads; a sender may wait on it, or leave a callback (the
    worker acks a failed attempt only once its retry is confirmed, without blocking a thread on it).
    """

    __slots__ = ("_callbacks", "_done", "_lock", "_unsettled", "failure")

    def __init__(self, count: int) -> None:
        self._unsettled = count
        #: The first reason a message of this call was refused or abandoned; None while all are fine.
        self.failure: str | None = None
        self._lock = threading.Lock()
        self._done = OneShot()
        self._callbacks: list[Callable[[str | None], None]] = []
        if count <= 0:
            self._done.set()

    @classmethod
    def confirmed(cls) -> Receipt:
        return cls(0)

    def settle(self, count: int = 1, failure: str | None = None) -> None:
        """The broker's side: ``count`` more messages are confirmed (``failure`` None) or refused."""
        with self._lock:
            if failure is not None and self.failure is None:
                self.failure = failure
            self._unsettled -= count
            if self._unsettled > 0 or self._done.is_set():
                return
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._call(callback)

    @property
    def done(self) -> bool:
        """Every message is settled (confirmed or refused)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once every message is confirmed, False if some are still unsettled at ``timeout``.

        Raises PublishError naming the broker's reason when one was refused or abandoned."""
        settled = self._done.wait(timeout)
        if settled and self.failure is not None:
            raise PublishError(self.failure)
        return settled

    def add_done_callback(self, callback: Callable[[str | None], None]) -> None:
        """``callback(failure)`` once every message is settled (at once if already). It runs on a broker
        thread: it must be quick and must not publish."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        self._call(callback)

    def _call(self, callback: Callable[[str | None], None]) -> None:
        try:
            callback(self.failure)
        except BaseException:
            log.exception("a publish receipt callback failed; the broker carries on")


class PublishListener(Protocol):
    """Told about messages once their fate is known, and about connections. Called from the broker's
    threads."""

    def connected(self) -> None:
        """The publishing side connected, or reconnected after an outage (re-enqueue runs here)."""

    def confirmed(self, messages: Sequence[Message]) -> None:
        """The broker holds these messages durably."""

    def abandoned(self, messages: Sequence[Message], reason: str) -> None:
        """These messages will never be published (the broker stayed away past connection_timeout)."""


class Consumer(Protocol):
    """Messages from a set of queues. Every method may be called from any thread."""

    def receive(self, timeout: float, priorities: Collection[Priority] | None = None) -> Delivery | None:
        """Next delivery, high priority first when both are waiting; None after ``timeout`` seconds.

        ``priorities`` narrows it to some families: a handler thread about to start a low task asks
        for a waiting high one with ``receive(0, (Priority.HIGH,))``."""

    def ack(self, delivery: Delivery) -> None:
        """The outcome is recorded: remove the message for good."""

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """The message can never run: move it to ``cogman.dead_letter`` with ``reason``, then drop it."""

    def requeue(self, delivery: Delivery) -> None:
        """Give an unstarted message back, so another worker (or this one later) can take it."""

    def redeliver(self, delivery: Delivery, reason: str) -> None:
        """Processing failed unexpectedly (not the handler's own exception): give the message back with
        its redelivery count raised by one, or, once ``max_redeliveries`` is reached, dead-letter it
        with ``reason``. So no message loops forever between the broker and a worker."""

    def is_current(self, delivery: Delivery) -> bool:
        """False for a delivery of a connection that has since dropped: the broker requeued it already
        (another worker may be running it), so it must not run here."""

    def cancel(self) -> None:
        """Stop new deliveries (basic.cancel) and give back the ones received but not handed out; acks
        of running tasks still go through until ``close``."""

    def close(self) -> None:
        """Stop receiving; messages not yet acked go back to the broker."""


class Broker(Protocol):
    """A message transport with Cogman's two queue families."""

    def set_listener(self, listener: PublishListener) -> None:
        """Where to report confirmed and abandoned messages."""

    def publish(self, messages: Sequence[Message], *, wait: bool = True) -> Receipt:
        """Publish and wait (up to ``request_timeout``) for the confirms, pipelined, or park the
        messages in an outbox while the broker is away; with ``wait=False``, return once they are
        written (or parked) and settle the receipt when the confirms arrive. Reports each message to the listener and
        settles the returned receipt. Raises PublishError naming the broker's reason when it refused a
        message this call waited for; BrokerUnavailable when the outbox stays full for
        ``request_timeout``, or the broker has been away longer than ``connection_timeout``."""

    def publish_each(self, messages: Sequence[Message], receipts: Sequence[Receipt]) -> None:
        """``publish(messages, wait=False)``, settling ``receipts[i]`` (once) for ``messages[i]``: a
        refused message fails only its own receipt. Raises as ``publish`` does."""

    def pending(self) -> int:
        """Messages accepted by ``publish`` and not yet confirmed (the outbox and those in flight)."""

    def unconfirmed_ids(self) -> list[str]:
        """Task ids of those messages: the client renews their re-enqueue lease while it holds them."""

    def consume(self, priorities: Iterable[Priority], prefetch: int) -> Consumer:
        """A consumer over every queue of the given families. ``prefetch`` bounds the unacked messages
        (running and waiting) the transport may push per family; the worker passes its concurrency plus
        its own prefetch, and bounds the unstarted ones it holds itself."""

    def dead_letters(self) -> list[Delivery]:
        """A snapshot of the dead-letter place, for inspection and tests (nothing is removed)."""

    def close(self) -> None:
        """Release connections; unconfirmed outbox messages stay reported as pending."""

    # Operator views and actions (issue 10): ``/info``, ``cogman queues`` and ``cogman purge``

    def queue_stats(self) -> list[QueueStats]:
        """Every queue of the topology and the dead-letter queue, read fresh (a short-lived connection
        on RabbitMQ, so a broker restart never leaves it stale). Raises BrokerUnavailable."""

    def purge(self, settle: Callable[[list[Delivery]], None]) -> int:
        """Remove the messages waiting in the task queues (not the dead-letter queue), at most as many as
        were there when it started. Each batch is handed to ``settle`` (which records the tasks) before
        it is acked, so a crash in between leaves the messages in place. Returns how many were removed."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue as the broker reports it: ``kind`` is ``high``, ``low``, ``dead_letter`` or ``delayed``
    (a level of the delay ladder, or the memory broker's heap: tasks waiting for their ``eta``)."""

    name: str
    kind: str
    ready: int
    consumers: int
    #: False when the queue was never declared (no worker or client used it yet).
    exists: bool = True
