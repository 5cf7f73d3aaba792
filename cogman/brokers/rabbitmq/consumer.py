"""RabbitMQ consumer: one I/O thread owns the connection; the worker's threads talk to it through queues.

kombu connections are not thread-safe, and the worker acks from its handler threads. So, as Dramatiq
does, acks, rejects, dead-letters and redeliveries are queued and carried out by the one thread that
owns the connection, between reads. That thread waits on the socket *and* a wake-up socket, so an ack
goes out as soon as it is queued (one frame, no round trip), not when a read times out. Deliveries are
buffered per priority and ``receive`` hands out high before low.

Each queue gets its own basic.consume with a per-consumer prefetch (``basic.qos`` global=False), so
however many low messages are unacked, the high queues still deliver. Deliveries are read leniently
(``inbound.py``): one that cannot be decoded reaches the worker marked ``poison`` and is dead-lettered
once, instead of breaking the connection.

When the connection breaks, the thread reconnects with tenacity (forever, until closed or cancelled)
in a new ``Session``: topology declared again, consumers again. The Go seed system stayed up with zero
consumers here. A topology mismatch or a refused login found on reconnect is fatal: the thread ends and
``receive`` raises it. Each session has a generation number, carried in each delivery's tag. A delivery
of a connection that dropped is not current (RabbitMQ has requeued it already; another worker may run
it): ``is_current`` says so, ``receive`` never hands one out, and its ack is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Collection

from cogman.brokers.base import Delivery
from cogman.brokers.rabbitmq.connection import CONNECTION_ERRORS, MAX_BACKOFF, Waker, retrying
from cogman.brokers.rabbitmq.consumer_session import Session, Tag
from cogman.brokers.rabbitmq.inbound import delivery_from as delivery_from  # rabbitmq.py reads dead letters with it
from cogman.brokers.rabbitmq.topology import Topology
from cogman.config.settings import Config
from cogman.errors import BrokerAccessRefused, ConsumerStopped, TopologyError
from cogman.priority import Priority

log = logging.getLogger("cogman.rabbitmq")

#: Errors no reconnect can fix: the thread ends and ``receive`` raises them to the worker.
FATAL_ERRORS = (TopologyError, BrokerAccessRefused)


class RabbitMQConsumer:
    """Consumes every queue of the given priority families; see the module docstring.

    ``receive`` raises only errors that end the consumer (TopologyError, BrokerAccessRefused,
    ConsumerStopped): the worker must stop on any of them."""

    def __init__(
        self, url: str, config: Config, topology: Topology, priorities: tuple[Priority, ...], prefetch: int
    ) -> None:
        self.url = url
        self.config = config
        self.topology = topology
        self.priorities = tuple(sorted(set(priorities), key=lambda p: p.order))
        self.prefetch = max(1, prefetch)
        self._buffers: dict[Priority, deque[Delivery]] = {p: deque() for p in Priority}
        self._ready = threading.Condition()
        self._actions: deque[tuple[str, Delivery, str]] = deque()
        self._waker = Waker()
        self._closing = threading.Event()
        self._halt = threading.Event()  #: closing or cancelled: no more reconnecting
        self._cancelled = False
        self._cancel_done = threading.Event()
        self._fatal: BaseException | None = None
        self._generations = 0
        self._current: int | None = None  #: generation of the live session; None while down
        self._session: Session | None = None
        self.reconnects = 0
        try:
            self._connect()
        except CONNECTION_ERRORS as exc:
            log.warning("worker cannot reach RabbitMQ yet (%s); it keeps trying and consumes once it can", exc)
        except BaseException:
            self._waker.close()
            raise
        self._thread = threading.Thread(target=self._run, name="cogman-rabbitmq-consumer", daemon=True)
        self._thread.start()

    # The worker's side

    def receive(self, timeout: float, priorities: Collection[Priority] | None = None) -> Delivery | None:
        deadline = time.monotonic() + timeout
        wanted = self.priorities if priorities is None else [p for p in self.priorities if p in priorities]
        with self._ready:
            while True:
                if self._fatal is not None:
                    raise self._fatal.with_traceback(None)  # raised again on every call: keep it small
                if not self._cancelled:
                    for priority in wanted:
                        buffer = self._buffers[priority]
                        while buffer:
                            delivery = buffer.popleft()
                            if self.is_current(delivery):
                                return delivery
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing.is_set():
                    return None
                self._ready.wait(remaining)

    def buffered(self) -> list[Delivery]:
        """Deliveries read and not handed out yet: unacked, counted by brokers/held.py."""
        with self._ready:
            return [delivery for buffer in self._buffers.values() for delivery in buffer]

    def ack(self, delivery: Delivery) -> None:
        self._queue_action("ack", delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._queue_action("dead_letter", delivery, reason)

    def requeue(self, delivery: Delivery) -> None:
        self._queue_action("requeue", delivery)

    def redeliver(self, delivery: Delivery, reason: str) -> None:
        if delivery.redeliveries >= self.config.max_redeliveries:
            self.dead_letter(delivery, f"{reason} (given back {delivery.redeliveries} time(s) already)")
        else:
            self._queue_action("redeliver", delivery, reason)

    def is_current(self, delivery: Delivery) -> bool:
        tag = delivery.tag
        return isinstance(tag, Tag) and tag.generation == self._current

    def cancel(self) -> None:
        """basic.cancel every consumer, and give the buffered deliveries back; waits (up to
        ``request_timeout``) until the I/O thread has done so. Acks still go out until ``close``."""
        with self._ready:
            self._cancelled = True
            self._ready.notify_all()
        self._halt.set()
        self._waker.wake()
        self._cancel_done.wait(self.config.request_timeout)

    def close(self) -> None:
        """Carry out the queued acks, wait (up to ``request_timeout``) for dead-letter confirms, then
        close: unacked deliveries go back to their queues."""
        self._closing.set()
        self._halt.set()
        self._waker.wake()
        with self._ready:
            self._ready.notify_all()
        self._thread.join(timeout=max(5.0, self.config.request_timeout * 2))

    def _queue_action(self, action: str, delivery: Delivery, reason: str = "") -> None:
        self._actions.append((action, delivery, reason))  # deque.append is thread-safe
        self._waker.wake()

    # The I/O thread

    def _run(self) -> None:
        unexpected = brief = 0
        try:
            while not self._closing.is_set():
                if self._session is None:
                    self._reconnect()
                    continue
                try:
                    self._serve(self._session)
                    unexpected = 0
                except FATAL_ERRORS:
                    raise
                except CONNECTION_ERRORS as exc:
                    # A connection that keeps failing as soon as it is open (a channel error that recurs,
                    # such as a refused dead-letter publish) reconnects with backoff, not in a tight loop.
                    brief = brief + 1 if time.monotonic() - self._session.opened_at < 1.0 else 0
                    self._drop(exc)
                    if brief > 1:
                        self._closing.wait(min(MAX_BACKOFF, 0.1 * 2**brief))
                except Exception as exc:  # never end up alive with zero consumers (the Go seed's bug)
                    log.exception("unexpected error in the RabbitMQ consumer; reconnecting")
                    self._drop(exc)
                    unexpected += 1
                    self._closing.wait(min(MAX_BACKOFF, 0.5 * 2**unexpected))  # a bug must not spin
            self._finish()
        except FATAL_ERRORS as exc:
            log.error("the RabbitMQ consumer stops: %s", exc)
            self._fail(exc)
        except BaseException as exc:
            log.critical("the RabbitMQ consumer thread crashed; the worker must stop", exc_info=True)
            stopped = ConsumerStopped(f"the RabbitMQ consumer thread crashed: {type(exc).__name__}: {exc}")
            stopped.__cause__ = exc
            self._fail(stopped)
        finally:
            if self._session is not None:
                self._session.close()
            self._session, self._current = None, None
            self._cancel_done.set()
            self._waker.close()

    def _fail(self, exc: BaseException) -> None:
        with self._ready:
            self._fatal = exc
            self._ready.notify_all()

    def _serve(self, session: Session) -> None:
        """One round: cancel if asked, carry out queued actions, then wait for the socket or a wake-up
        and read what arrived."""
        if self._cancelled and not self._cancel_done.is_set():
            session.cancel_consumers(self._take_buffered())
            log.info("consumers cancelled; buffered deliveries given back to RabbitMQ")
            self._cancel_done.set()
        self._settle_actions(session)
        if not self._actions:
            session.serve(self._waker, timeout=1.0)

    def _finish(self) -> None:
        """Closing: settle the queued actions and wait a little for copies still unconfirmed."""
        if self._session is None:
            return
        try:
            self._settle_actions(self._session)
            self._session.flush(self._waker)
        except Exception as exc:
            log.warning("could not settle the last acks before closing (%s); RabbitMQ redelivers", exc)

    def _settle_actions(self, session: Session) -> None:
        """Carry out the acks, requeues, dead-letters and redeliveries queued by handler threads."""
        acks: list[Delivery] = []
        try:
            while self._actions:
                action, delivery, reason = self._actions.popleft()
                if not session.owns(delivery):
                    log.debug("%s of a delivery from a lost connection dropped; RabbitMQ redelivers it", action)
                elif action == "ack":
                    acks.append(delivery)
                else:
                    session.settle(action, delivery, reason)
        finally:  # a failed action still lets the acks before it go, or, if the link broke, nothing does
            if acks:
                session.ack_all(acks)

    def _take(self, delivery: Delivery) -> bool:
        """A delivery was read: buffer it, unless the consumer is cancelled (then it goes back)."""
        with self._ready:
            if self._cancelled:
                return False
            self._buffers[delivery.priority].append(delivery)
            self._ready.notify()
            return True

    def _take_buffered(self) -> list[Delivery]:
        with self._ready:
            buffered = [delivery for buffer in self._buffers.values() for delivery in buffer]
            for buffer in self._buffers.values():
                buffer.clear()
        return buffered

    def _connect(self) -> None:
        with self._ready:
            self._generations += 1
            self._current = generation = self._generations  # deliveries arrive from the first consume on
        try:
            self._session = Session(
                self.url,
                self.config,
                self.topology,
                self.priorities,
                self.prefetch,
                generation,
                self._take,
                consume=not self._cancelled,
            )
        except BaseException:
            self._forget()
            raise

    def _reconnect(self) -> None:
        if self._halt.is_set():  # cancelled: nothing to consume, and no old delivery can be acked anyway
            self._cancel_done.set()
            self._closing.wait()
            return
        try:
            for attempt in retrying(self._halt, "worker", lambda exc: None):
                with attempt:
                    self._connect()
        except FATAL_ERRORS:
            raise
        except CONNECTION_ERRORS:
            return  # halted
        except Exception:
            log.exception("unexpected error while reconnecting to RabbitMQ; trying again")
            self._halt.wait(MAX_BACKOFF)
            return
        if self._session is not None:
            self.reconnects += 1
            log.info("worker reconnected to RabbitMQ and consumes again (generation %d)", self._current)

    def _drop(self, exc: BaseException) -> None:
        """The connection broke: forget it and its buffered deliveries (RabbitMQ requeues them)."""
        log.warning("worker lost RabbitMQ (%s: %s); reconnecting", type(exc).__name__, exc)
        if self._session is not None:
            self._session.discard()
        self._session = None
        self._forget()

    def _forget(self) -> None:
        with self._ready:
            self._current = None
        dropped = self._take_buffered()
        if dropped:
            log.info("%d buffered delivery(ies) will be redelivered by RabbitMQ", len(dropped))
