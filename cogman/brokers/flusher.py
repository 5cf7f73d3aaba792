"""The publisher's one background thread: redials a lost RabbitMQ, drains the outbox in order, sends
suspects one at a time, reads late confirms and blocked/unblocked notifications, keeps heartbeats, and
tells the listener about a (re)connection once the outbox is flushed.

What it does is decided by the publisher's phase (``publisher_state.py``), read under the state lock::

    not connected, phase connecting / down / gone (or closing with messages held)  -> redial with backoff
    connected, phase up or closing, messages waiting (closing: or in flight)          -> send the next batch
    connected, phase up, messages in flight (sent without waiting)                    -> read their confirms
    otherwise                                                                         -> wait, then tick

Reading confirms waits on the socket *without* the I/O lock (a sender may publish meanwhile), then takes
the lock only to read what arrived: that is what lets ``publish(wait=False)`` return at once while
confirms stay pipelined, and the ``queued`` writes of a whole confirm batch go in one backend call.

Its top level catches everything, logs it and carries on: whatever it held is back in the outbox by then
(every send path puts its entries back before re-raising), so a failure here never drops a message.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from cogman.brokers.connection import CONNECTION_ERRORS, Waker, retrying, wait_readable
from cogman.brokers.publisher_state import REDIAL, Phase
from cogman.errors import BrokerAccessRefused, TopologyError

if TYPE_CHECKING:
    from cogman.brokers.publisher import Publisher

log = logging.getLogger("cogman.rabbitmq")

#: Most messages, and about the most bytes, published per pipelined round when flushing the outbox.
FLUSH_CHUNK = 500
FLUSH_BYTES = 1 << 20
#: How long the flusher lets confirms gather once one arrived, before it reads them and writes their
#: ``queued`` states in one backend call. Waking per confirm cost a Redis round trip per message and
#: took the GIL from the sending thread on every one (docs/performance.md has the figures).
CONFIRM_LINGER = 0.005
#: How often an idle flusher reads the socket (late confirms, unblocked, heartbeats).
IDLE_TICK = 1.0


class Flusher:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        #: Wakes the flusher from a wait on the socket (new messages to send, closing).
        self._waker = Waker()

    def wake(self, *, socket: bool = True) -> None:
        """Whether the flusher waits on the socket (confirms) or on the state (idle, nothing in flight):
        a message just sent directly has a confirm to read now, not at the next idle tick. ``socket=False``
        after a direct send: a flusher waiting on the socket wakes for that confirm anyway, and the
        waker's write is a system call on every ``.delay()``."""
        with self.publisher.state.lock:
            self.publisher.state.lock.notify_all()
        if socket:
            self._waker.wake()

    def close(self) -> None:
        self._waker.close()

    def ensure_running(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._starting:
            if self._thread is not None and self._thread.is_alive():
                return
            if self.publisher.state.closed.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="cogman-outbox", daemon=True)
            self._thread.start()

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        publisher = self.publisher
        while not publisher.state.closed.is_set():
            try:
                self._step()
                publisher.reports.deliver()
                self._announce()
            except BaseException:
                log.exception("the outbox flusher failed; it carries on (what it held is back in the outbox)")
                publisher.state.closed.wait(IDLE_TICK)

    def _step(self) -> None:
        publisher = self.publisher
        with publisher.state.lock:
            phase = publisher.state.phase
            connected = publisher.link.connected
            if not connected and self._wants_link():
                action = self._redial
            elif connected and phase in (Phase.UP, Phase.CLOSING) and self._has_work():
                action = self._flush
            elif connected and phase is Phase.UP and publisher.link.in_flight():
                action = self._collect
            else:
                publisher.state.lock.wait(IDLE_TICK)
                action = self._tick
        action()

    def _has_work(self) -> bool:
        """Messages wait to be sent, or (closing) confirms are still to come. State lock held."""
        publisher = self.publisher
        closing = publisher.state.phase is Phase.CLOSING
        return bool(publisher.outbox.waiting or (closing and publisher.link.in_flight()))

    def _wants_link(self) -> bool:
        """State lock held."""
        state = self.publisher.state
        return state.phase in REDIAL or (state.phase is Phase.CLOSING and self.publisher.outbox.held > 0)

    def _flush(self) -> None:
        publisher = self.publisher
        deadline = time.monotonic() + publisher.config.request_timeout
        with publisher.io:
            if not publisher.link.connected:
                return
            with publisher.state.lock:
                if publisher.state.phase not in (Phase.UP, Phase.CLOSING):
                    return
                in_flight = publisher.link.in_flight() > 0
                batch = publisher.outbox.next_batch(FLUSH_CHUNK, FLUSH_BYTES, in_flight)
            if batch:
                publisher.send(batch, deadline)
                return
            if in_flight:  # a suspect goes out only when nothing else is in flight
                publisher.collect(deadline)
                return
        with publisher.state.lock:  # nothing to send yet (a suspect's report is on its way): do not spin
            publisher.state.lock.wait(IDLE_TICK)

    def _collect(self) -> None:
        """Wait for the socket without the I/O lock, then read the confirms that arrived."""
        publisher = self.publisher
        connection = publisher.link.connection
        if connection is None:
            return
        try:
            readable = wait_readable(connection, self._waker, IDLE_TICK)
        except (OSError, ValueError, AttributeError):  # the link was dropped meanwhile: the next step sees it
            readable = True
        if readable:
            publisher.state.closed.wait(CONFIRM_LINGER)
            with publisher.io:
                if publisher.link.connected:
                    publisher.tick()

    def _tick(self) -> None:
        publisher = self.publisher
        if not publisher.link.connected or not publisher.io.acquire(blocking=False):
            return
        try:
            publisher.tick()
        finally:
            publisher.io.release()

    def _redial(self) -> None:
        publisher = self.publisher
        try:
            for attempt in retrying(publisher.state.closed, "publisher", self._dial_failed):
                with attempt, publisher.io:
                    with publisher.state.lock:
                        wanted = self._wants_link()
                    if wanted and not publisher.link.connected:
                        publisher.connect()
        except CONNECTION_ERRORS:
            return  # closed while dialling
        except (BrokerAccessRefused, TopologyError) as exc:
            publisher.refused(exc, [])

    def _dial_failed(self, exc: BaseException) -> None:
        """After each failed dial: the first one means down; down past connection_timeout means gone,
        and what waits in the outbox is abandoned (never dropped)."""
        publisher = self.publisher
        state = publisher.state
        limit = publisher.config.connection_timeout
        with state.lock:
            if state.phase is Phase.CONNECTING:
                state.move(Phase.DOWN, f"{type(exc).__name__}: {exc}")
            if limit <= 0 or state.phase is not Phase.DOWN or state.down_for() < limit:
                return
            reason = (
                f"RabbitMQ at {publisher.url.split('@')[-1]} has been unreachable for more than "
                f"connection_timeout={limit:g}s (last error: {type(exc).__name__}: {exc})"
            )
            state.move(Phase.GONE, reason)
            publisher.reports.add(publisher.outbox.take_all(), reason)
        publisher.reports.deliver()

    def _announce(self) -> None:
        """Tell the listener about a (re)connection once the outbox is flushed and its confirms reported,
        so what re-enqueue finds ``initiated`` is not also on its way from this process's outbox."""
        publisher = self.publisher
        with publisher.state.lock:
            link = publisher.link
            ready = (
                publisher.state.phase is Phase.UP
                and link.connected
                and not link.announced
                and not publisher.outbox.waiting
                and not publisher.outbox.isolating
            )
            if ready:
                link.announced = True
        listener = publisher.reports.listener
        if ready and listener is not None:
            try:
                listener.connected()
            except Exception:
                log.exception("the publish listener failed on connect; carrying on")
