"""Settling a delivery once its outcome is decided: ack it only when the backend holds the outcome.

The executor decides what happened to a delivery; this module decides when the broker hears of it. An
ack waits for :meth:`Backend.durable` (a write parked in memory during an outage holds it back) and for
the receipt of whatever the outcome published (a retry, a workflow's next step). The number of acks
held back this way is the worker's in-memory loss window, so it is counted and bounded
(:meth:`Settler.wait_for_room`: the worker stops fetching while it is full).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from cogman.errors import BackendUnavailable, BrokerUnavailable, PublishError

if TYPE_CHECKING:
    from cogman.backends.base import Backend
    from cogman.brokers.base import Broker, Consumer, Delivery, Receipt
    from cogman.message import Message

log = logging.getLogger("cogman.worker")

#: Longest pause between two tries of a write the backend cannot take right now.
MAX_BACKEND_PAUSE = 5.0

T = TypeVar("T")


class GiveBack(Exception):
    """The worker is stopping while the backend is away: the delivery goes back unacked."""


class Settler:
    """Acks deliveries once their outcome is durable, and counts those it holds back."""

    def __init__(self, backend: Backend, consumer: Consumer, stopping: threading.Event) -> None:
        self.backend = backend
        self.consumer = consumer
        self.stopping = stopping
        self._held = 0
        self._held_lock = threading.Condition()

    @property
    def held(self) -> int:
        """Deliveries whose outcome is decided but not yet durable (or whose retry is unconfirmed)."""
        with self._held_lock:
            return self._held

    def ack_when_durable(self, delivery: Delivery, after: Receipt | None = None) -> None:
        """Ack once every outcome write is in the backend (and ``after``, the retry's receipt, settled).
        A write that failed for good gives the message back instead, counted."""
        with self._held_lock:
            self._held += 1

        def durable(failure: str | None) -> None:
            try:
                if failure is None:
                    self.consumer.ack(delivery)
                else:
                    self.consumer.redeliver(delivery, f"outcome not recorded: {failure}")
            finally:
                self._release()

        def sent(failure: str | None) -> None:
            if failure is None:
                self.backend.durable(durable)
                return
            # The retry was not confirmed (the publisher closed, or gave it up and recorded why): give
            # this attempt back rather than ack it. Its record is final, so the redelivery is skipped;
            # the retry's record waits for re-enqueue, or says why it failed.
            log.warning("retry of a failed attempt not confirmed (%s); its message goes back", failure)
            try:
                self.consumer.redeliver(delivery, f"retry not confirmed: {failure}")
            finally:
                self._release()

        if after is None:
            self.backend.durable(durable)
        else:
            after.add_done_callback(sent)

    def _release(self) -> None:
        with self._held_lock:
            self._held -= 1
            self._held_lock.notify_all()

    def wait_in_broker(self, broker: Broker, delivery: Delivery, later: Message, why: str) -> bool:
        """Send ``later`` (the delivery's message, with its new ``eta``) to wait on the broker's delay,
        and ack the delivery once that copy is confirmed: never held in this process. A copy that cannot
        be sent gives the delivery back, counted (no endless loop through the broker). True when the
        copy is on its way, False when the delivery went back at once."""

        def sent(failure: str | None) -> None:
            if failure is None:
                self.consumer.ack(delivery)
            else:
                self.consumer.redeliver(delivery, f"{why}: {failure}")

        try:
            broker.publish([later]).add_done_callback(sent)
        except (BrokerUnavailable, PublishError) as exc:
            sent(str(exc))
            return False
        return True

    def wait_for_room(self, limit: int, timeout: float) -> None:
        """Block (up to ``timeout``) while ``limit`` or more acks are held: a worker whose backend is
        away stops fetching instead of piling up outcomes that live only in its memory."""
        with self._held_lock:
            self._held_lock.wait_for(lambda: self._held < limit or self.stopping.is_set(), timeout)

    def until_recorded(self, write: Callable[[], T], what: str) -> T:
        """Run a backend call, waiting out an outage (the handler is not run again for it); a stopping
        worker gives the delivery back instead of waiting."""
        return through_outage(write, what, self.stopping, GiveBack)


def through_outage(
    call: Callable[[], T], what: str, stopping: threading.Event, give_up: Callable[[str], BaseException]
) -> T:
    """``call()``, tried again with a growing pause (up to :data:`MAX_BACKEND_PAUSE`) while the backend is
    unavailable; once ``stopping`` is set, raise ``give_up(what)`` instead of waiting on: the caller
    gives its delivery back unacked, and its redelivery finds the work to do."""
    pause = 0.2
    while True:
        try:
            return call()
        except BackendUnavailable as exc:
            if stopping.is_set():
                raise give_up(what) from exc
            log.warning("cannot %s yet (%s); trying again in %.1f s", what, exc, pause)
            stopping.wait(pause)
            pause = min(pause * 2, MAX_BACKEND_PAUSE)
