"""Confirmed publishing to RabbitMQ: what a send does in each phase of the publisher's life.

In one picture::

    publish(batch) --up, nothing waits--> send all, collect the confirms (pipelined) -> listener, receipt
          |                                   | connection lost: the unconfirmed go back to the outbox front
          |                                   | a message refused (its channel closed): it alone fails
          +--down / blocked / outbox busy--> outbox (FIFO) --> flusher thread (flusher.py)

Two locks, never nested the other way round: ``io`` owns the link (kombu connections are not
thread-safe); ``state.lock`` guards the phase, the outbox and the reports, held for a few lines only. A
caller waits for ``io`` at most ``request_timeout``, and every path that fails a send releases it (a
``finally``): the Go seed system deadlocked there. The listener is called with neither lock held.

``publish`` either accepts a batch, whose receipt is then settled exactly once per message, or raises
after reporting the whole batch abandoned: a send that raised never leaves a record ``initiated``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from cogman.brokers.base import PublishListener, Receipt
from cogman.brokers.rabbitmq.connection import CONNECTION_ERRORS, channel_refusal
from cogman.brokers.rabbitmq.flusher import Flusher
from cogman.brokers.rabbitmq.outbox import Entry, Outbox, Reports, settle
from cogman.brokers.rabbitmq.publish_link import PublishLink
from cogman.brokers.rabbitmq.publisher_state import AWAY, SEND_DIRECTLY, Phase, PublisherState
from cogman.brokers.rabbitmq.topology import Topology
from cogman.config.settings import Config
from cogman.errors import BrokerAccessRefused, BrokerUnavailable, PublishError, TopologyError
from cogman.message import Message
from cogman.priority import Priority

log = logging.getLogger("cogman.rabbitmq")

CLOSED = "the RabbitMQ broker was closed; create a new App to send again"
UNCONFIRMED_AT_CLOSE = "the broker was closed before RabbitMQ confirmed the message; its record stays 'initiated'"


class Publisher:
    """The publishing half of the RabbitMQ broker. Connects lazily: creating one never blocks or raises."""

    def __init__(self, url: str, config: Config, topology: Topology) -> None:
        self.url = url
        self.config = config
        self.state = PublisherState()
        self.outbox = Outbox(config.outbox_limit)
        self.link = PublishLink(url, config, topology, self._on_settle, self._on_blocked, self._on_unblocked)
        self.io = threading.Lock()
        self.reports = Reports(self.state.lock, self.outbox)
        self._round_robin = {p: itertools.cycle(topology.names(p)) for p in Priority}
        self._flusher = Flusher(
            self,
            url=url,
            config=config,
            state=self.state,
            outbox=self.outbox,
            link=self.link,
            reports=self.reports,
            io=self.io,
        )
        #: Connections made so far; all but the first are reconnections (``reconnects``).
        self.connections = 0

    def set_listener(self, listener: PublishListener) -> None:
        self.reports.listener = listener
        if self.config.re_enqueue:  # connect without waiting for a send: re-enqueue runs on connect
            with self.state.lock:
                self.state.move(Phase.CONNECTING)
            self._flusher.ensure_running()

    @property
    def reconnects(self) -> int:
        """Connections after the first (the ``cogman_broker_reconnects`` metric)."""
        return max(0, self.connections - 1)

    # Sending

    def publish(self, messages: Sequence[Message], *, wait: bool = True) -> Receipt:
        """Accept a batch. With ``wait``, return once every message is confirmed (or parked while the
        broker is away, or ``request_timeout`` passed); without, once it is written to the socket or
        parked: the flusher thread reads the confirms and settles the receipt."""
        receipt = Receipt(len(messages))
        if messages:
            self._accept(messages, [receipt] * len(messages), wait)
        return receipt

    def publish_each(self, messages: Sequence[Message], receipts: Sequence[Receipt]) -> None:
        """``publish(messages, wait=False)``, settling ``receipts[i]`` for ``messages[i]`` (one receipt
        may stand for several messages: it counts them). One pass through the outbox for the batch, and
        a refused message fails only its own receipt: the lean sender's hand-offs are these receipts."""
        if messages:
            self._accept(messages, receipts, wait=False)

    def _accept(self, messages: Sequence[Message], receipts: Sequence[Receipt], wait: bool) -> None:
        deadline = time.monotonic() + self.config.request_timeout
        bodies = [message.encode() for message in messages]
        with self.state.lock:
            entries = [
                Entry(message, next(self._round_robin[message.priority]), body, receipt)
                for message, body, receipt in zip(messages, bodies, receipts, strict=True)
            ]
            refusal = self._admit(entries, deadline)
            direct = refusal is None and self._may_send_directly()
            if refusal is None and not direct:
                self.outbox.park(entries)
                self.state.lock.notify_all()
        if refusal is not None:
            self.reports.refuse(entries, refusal)
            raise BrokerUnavailable(refusal)
        self._flusher.ensure_running()
        if direct:
            try:
                self._send_now(entries, deadline, wait)
            except (BrokerAccessRefused, TopologyError):
                with contextlib.suppress(PublishError):  # its report may be on another thread: let it land
                    receipts[-1].wait(self.config.request_timeout)
                raise
        if not wait:
            self._flusher.wake(socket=not direct)
        elif self.state.phase not in AWAY:
            receipts[-1].wait(max(0.0, deadline - time.monotonic()))  # raises PublishError naming a refusal

    def _admit(self, entries: list[Entry], deadline: float) -> str | None:
        """Hold ``entries`` once the outbox has room (waiting up to the deadline); else why not (lock held)."""
        while True:
            phase = self.state.phase
            if phase in (Phase.CLOSING, Phase.CLOSED):
                return CLOSED
            if phase is Phase.GONE:
                return self.state.reason or "RabbitMQ is unreachable"
            if self.outbox.has_room(len(entries)):
                self.outbox.admit(entries)
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return (
                    f"the outbox is full: {self.outbox.held} message(s) wait for RabbitMQ's confirms "
                    f"(outbox_limit={self.outbox.limit}) and no room came free within "
                    f"request_timeout={self.config.request_timeout:g}s"
                )
            self.state.lock.wait(remaining)

    def _may_send_directly(self) -> bool:
        return self.state.phase in SEND_DIRECTLY and not self.outbox.waiting and not self.outbox.isolating

    def _send_now(self, entries: list[Entry], deadline: float, wait: bool = True) -> None:
        """Publish on the caller's thread and, with ``wait``, collect the confirms until the deadline."""
        if not self.io.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self._park(entries)  # someone holds a stuck connection: the flusher takes over
            return
        try:
            with self.state.lock:
                direct = self._may_send_directly()
            if direct:
                self.send(entries, deadline if wait else None)
            else:
                self._park(entries)  # lost a race with a failure: keep the order
        finally:
            self.io.release()
            if wait:
                self.reports.deliver()  # else the flusher reads the confirms and tells the listener

    def send(self, entries: list[Entry], deadline: float | None) -> None:
        """Publish ``entries`` pipelined and read confirms until they are settled, the connection is
        blocked, or the deadline (``io`` held; no deadline: publish only, the flusher reads the confirms).
        Whatever fails, every entry stays held somewhere."""
        sent = 0
        try:
            if not self.link.connected:
                self.connect()
            last = 0
            for entry in entries:  # py-amqp reads pending notifications before each publish
                if self.state.phase is Phase.BLOCKED:
                    self._park(entries[sent:], front=True)  # RabbitMQ stopped reading: do not fill the socket
                    break
                last = self.link.send(entry)
                sent += 1
            if deadline is not None:
                self.link.drain(lambda: self.link.settled_through(last) or self.state.phase is Phase.BLOCKED, deadline)
        except (BrokerAccessRefused, TopologyError) as exc:
            self.refused(exc, entries)
            raise
        except CONNECTION_ERRORS as exc:
            self.failed(exc, entries[sent:])
        except BaseException as exc:
            self.lost(exc, entries[sent:])
            raise

    def collect(self, deadline: float) -> None:
        """Read confirms until nothing is in flight or the deadline (``io`` held)."""
        self._read(lambda: self.link.drain(lambda: not self.link.in_flight(), deadline))

    def tick(self) -> None:
        """While idle (``io`` held): notice a closed connection early, read late confirms, heartbeats."""
        self._read(self.link.tick)

    def _read(self, operation: Callable[[], None]) -> None:
        try:
            operation()
        except CONNECTION_ERRORS as exc:
            self.failed(exc, [])
        except BaseException as exc:
            self.lost(exc, [])
            raise

    def _park(self, entries: list[Entry], front: bool = False) -> None:
        with self.state.lock:
            self.outbox.push_front(entries) if front else self.outbox.park(entries)
            self.state.lock.notify_all()
        self._flusher.wake()

    # What happens to the link (``io`` held)

    def connect(self) -> None:
        self.link.open()
        self.connections += 1
        with self.state.lock:
            before = self.state.phase
            if self.state.move(Phase.UP) and before in (Phase.DOWN, Phase.GONE):
                log.info("publisher reconnected to RabbitMQ; %d message(s) in the outbox", self.outbox.waiting)

    def failed(self, exc: BaseException, unsent: list[Entry]) -> None:
        """A send or a read raised: a refused message (its channel closed) or a lost connection."""
        refusal = channel_refusal(self.link.connection, exc)
        if refusal is None:
            self.lost(exc, unsent)
            return
        orphans = self.link.take_orphans()
        try:
            self.link.restart_channel()
        except BaseException as broken:  # the orphans go back to the outbox whatever broke
            self.lost(broken, orphans + unsent)
            if isinstance(broken, CONNECTION_ERRORS):
                return
            raise
        reason = f"RabbitMQ refused the message: {refusal.reason}"
        culprit = orphans[0] if len(orphans) == 1 and (refusal.of_publish or orphans[0].suspect) else None
        innocent = [entry for entry in orphans if entry is not culprit]
        with self.state.lock:
            if culprit is not None:
                self.reports.add([culprit], reason)
            self.outbox.suspect(innocent)
            self.outbox.push_front(innocent + unsent)
            self.state.lock.notify_all()
        if innocent:  # one of them was refused: each goes again alone, so that only that one fails
            log.warning("RabbitMQ refused a message (%s); %d go again one by one", refusal.reason, len(innocent))

    def lost(self, exc: BaseException, unsent: list[Entry]) -> None:
        """The connection broke: unconfirmed and unsent go back to the outbox front, the flusher redials."""
        orphans, reason = self.link.drop(), f"{type(exc).__name__}: {exc}"
        with self.state.lock:
            self.outbox.push_front(orphans + unsent)
            moved = self.state.move(Phase.DOWN, reason)
            waiting = self.outbox.waiting
        if moved:
            log.warning("publisher lost RabbitMQ (%s); %d message(s) wait in the outbox", reason, waiting)
        self._flusher.ensure_running()

    def refused(self, exc: BaseException, entries: Iterable[Entry]) -> None:
        """Login, vhost or topology refused: retrying cannot help, so what waits is abandoned with the
        reason, and sends raise (each dials once) until a dial succeeds."""
        reason = str(exc)
        with self.state.lock:
            self.state.move(Phase.REFUSED, reason)
            self.reports.add([*self.outbox.take_all(), *entries], reason)
        log.error("publisher: %s; sends raise until a connection succeeds", reason)

    def _on_settle(self, entry: Entry, failure: str | None) -> None:
        with self.state.lock:
            self.reports.add([entry], failure)

    def _on_blocked(self, reason: str) -> None:
        with self.state.lock:
            moved = self.state.move(Phase.BLOCKED, reason)
        if moved:
            log.warning("RabbitMQ blocked the publishing connection (%s): sends wait in the outbox", reason)

    def _on_unblocked(self) -> None:
        with self.state.lock:
            moved = self.state.move(Phase.UP)
            waiting = self.outbox.waiting
        if moved:
            log.warning("RabbitMQ unblocked the publishing connection; %d message(s) in the outbox", waiting)

    # Depth and closing

    def pending(self) -> int:
        """Messages accepted by ``publish`` and not yet settled (waiting in the outbox or in flight)."""
        with self.state.lock:
            return self.outbox.held

    def unconfirmed_ids(self) -> list[str]:
        with self.state.lock:
            return self.outbox.task_ids()

    def close(self) -> None:
        """Drain the outbox (waiting up to ``close_timeout`` for a reconnection and the confirms), then
        release the connection. What is still unconfirmed is logged with its count; those records stay
        ``initiated`` for re-enqueue, and their receipts are settled with the reason."""
        with self.state.lock:
            if not self.state.move(Phase.CLOSING):
                return  # closing or closed already
            busy = self.outbox.held > 0
        if busy:
            self._flusher.ensure_running()
        deadline = time.monotonic() + self.config.close_timeout
        with self.state.lock:
            while self.outbox.held and (remaining := deadline - time.monotonic()) > 0:
                self.state.lock.wait(remaining)
            self.state.move(Phase.CLOSED)
        self._flusher.wake()
        self._flusher.join(self.config.request_timeout + 1.0)
        self._flusher.close()
        if self.io.acquire(timeout=max(1.0, self.config.request_timeout)):
            try:
                self.link.close()
            finally:
                self.io.release()
        self.reports.deliver()
        with self.state.lock:
            left = self.outbox.release_all()
        if left:
            log.warning(
                "RabbitMQ broker closed with %d message(s) never confirmed (close_timeout=%gs); their records "
                "stay 'initiated', for re-enqueue to publish again",
                len(left),
                self.config.close_timeout,
            )
            settle((entry, UNCONFIRMED_AT_CLOSE) for entry in left)
