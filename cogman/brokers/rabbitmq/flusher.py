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
from collections.abc import Iterable
from typing import Protocol

from cogman.brokers.rabbitmq.connection import CONNECTION_ERRORS, Waker, retrying, wait_readable
from cogman.brokers.rabbitmq.outbox import Entry, Outbox, Reports
from cogman.brokers.rabbitmq.publish_link import PublishLink
from cogman.brokers.rabbitmq.publisher_state import REDIAL, Phase, PublisherState
from cogman.config.settings import Config
from cogman.errors import BrokerAccessRefused, TopologyError

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


class Publishing(Protocol):
    """What the flusher asks of the publisher, ``io`` held: the same code as a caller's direct send, so a
    message goes out, is confirmed and fails the same way whichever thread sends it. A protocol, not
    the ``Publisher`` class, so that this module does not import the one that starts it."""

    def connect(self) -> None: ...

    def send(self, entries: list[Entry], deadline: float) -> None: ...

    def collect(self, deadline: float) -> None: ...

    def tick(self) -> None: ...

    def refused(self, exc: BaseException, entries: Iterable[Entry]) -> None: ...


class Flusher:
    """Handed the publisher's own state, outbox, link, reports and ``io`` lock, not copies: a caller's
    direct send and this thread must see one outbox under one lock, or order and confirms split."""

    def __init__(
        self,
        publishing: Publishing,
        *,
        url: str,
        config: Config,
        state: PublisherState,
        outbox: Outbox,
        link: PublishLink,
        reports: Reports,
        io: threading.Lock,
    ) -> None:
        self.publishing = publishing
        self.url = url
        self.config = config
        self.state = state
        self.outbox = outbox
        self.link = link
        self.reports = reports
        self.io = io
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        #: Wakes the flusher from a wait on the socket (new messages to send, closing).
        self._waker = Waker()

    def wake(self, *, socket: bool = True) -> None:
        """Whether the flusher waits on the socket (confirms) or on the state (idle, nothing in flight):
        a message just sent directly has a confirm to read now, not at the next idle tick. ``socket=False``
        after a direct send: a flusher waiting on the socket wakes for that confirm anyway, and the
        waker's write is a system call on every ``.delay()``."""
        with self.state.lock:
            self.state.lock.notify_all()
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
            if self.state.closed.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="cogman-outbox", daemon=True)
            self._thread.start()

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self.state.closed.is_set():
            try:
                self._step()
                self.reports.deliver()
                self._announce()
            except BaseException:
                log.exception("the outbox flusher failed; it carries on (what it held is back in the outbox)")
                self.state.closed.wait(IDLE_TICK)

    def _step(self) -> None:
        with self.state.lock:
            phase = self.state.phase
            connected = self.link.connected
            if not connected and self._wants_link():
                action = self._redial
            elif connected and phase in (Phase.UP, Phase.CLOSING) and self._has_work():
                action = self._flush
            elif connected and phase is Phase.UP and self.link.in_flight():
                action = self._collect
            else:
                self.state.lock.wait(IDLE_TICK)
                action = self._tick
        action()

    def _has_work(self) -> bool:
        """Messages wait to be sent, or (closing) confirms are still to come. State lock held."""
        closing = self.state.phase is Phase.CLOSING
        return bool(self.outbox.waiting or (closing and self.link.in_flight()))

    def _wants_link(self) -> bool:
        """State lock held."""
        return self.state.phase in REDIAL or (self.state.phase is Phase.CLOSING and self.outbox.held > 0)

    def _flush(self) -> None:
        deadline = time.monotonic() + self.config.request_timeout
        with self.io:
            if not self.link.connected:
                return
            with self.state.lock:
                if self.state.phase not in (Phase.UP, Phase.CLOSING):
                    return
                in_flight = self.link.in_flight() > 0
                batch = self.outbox.next_batch(FLUSH_CHUNK, FLUSH_BYTES, in_flight)
            if batch:
                self.publishing.send(batch, deadline)
                return
            if in_flight:  # a suspect goes out only when nothing else is in flight
                self.publishing.collect(deadline)
                return
        with self.state.lock:  # nothing to send yet (a suspect's report is on its way): do not spin
            self.state.lock.wait(IDLE_TICK)

    def _collect(self) -> None:
        """Wait for the socket without the I/O lock, then read the confirms that arrived."""
        connection = self.link.connection
        if connection is None:
            return
        try:
            readable = wait_readable(connection, self._waker, IDLE_TICK)
        except (OSError, ValueError, AttributeError):  # the link was dropped meanwhile: the next step sees it
            readable = True
        if readable:
            self.state.closed.wait(CONFIRM_LINGER)
            with self.io:
                if self.link.connected:
                    self.publishing.tick()

    def _tick(self) -> None:
        if not self.link.connected or not self.io.acquire(blocking=False):
            return
        try:
            self.publishing.tick()
        finally:
            self.io.release()

    def _redial(self) -> None:
        try:
            for attempt in retrying(self.state.closed, "publisher", self._dial_failed):
                with attempt, self.io:
                    with self.state.lock:
                        wanted = self._wants_link()
                    if wanted and not self.link.connected:
                        self.publishing.connect()
        except CONNECTION_ERRORS:
            return  # closed while dialling
        except (BrokerAccessRefused, TopologyError) as exc:
            self.publishing.refused(exc, [])

    def _dial_failed(self, exc: BaseException) -> None:
        """After each failed dial: the first one means down; down past connection_timeout means gone,
        and what waits in the outbox is abandoned (never dropped)."""
        state = self.state
        limit = self.config.connection_timeout
        with state.lock:
            if state.phase is Phase.CONNECTING:
                state.move(Phase.DOWN, f"{type(exc).__name__}: {exc}")
            if limit <= 0 or state.phase is not Phase.DOWN or state.down_for() < limit:
                return
            reason = (
                f"RabbitMQ at {self.url.split('@')[-1]} has been unreachable for more than "
                f"connection_timeout={limit:g}s (last error: {type(exc).__name__}: {exc})"
            )
            state.move(Phase.GONE, reason)
            self.reports.add(self.outbox.take_all(), reason)
        self.reports.deliver()

    def _announce(self) -> None:
        """Tell the listener about a (re)connection once the outbox is flushed and its confirms reported,
        so what re-enqueue finds ``initiated`` is not also on its way from this process's outbox."""
        with self.state.lock:
            link = self.link
            ready = (
                self.state.phase is Phase.UP
                and link.connected
                and not link.announced
                and not self.outbox.waiting
                and not self.outbox.isolating
            )
            if ready:
                link.announced = True
        listener = self.reports.listener
        if ready and listener is not None:
            try:
                listener.connected()
            except Exception:
                log.exception("the publish listener failed on connect; carrying on")
