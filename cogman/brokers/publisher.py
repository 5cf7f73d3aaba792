"""Confirmed publishing to RabbitMQ, with the offline outbox and its flusher thread.

In one picture::

    publish(batch) --connection up, outbox empty--> send all, collect the confirms (pipelined) -> listener
          |                                               | connection breaks
          +--broker known down / outbox not empty--> outbox (FIFO) <--- unconfirmed go back to the front
                                                          |
                       flusher thread: reconnect (tenacity), declare, send in order, confirm -> listener

Two locks, never nested the other way round: ``_io`` owns the connection (one user at a time, since
kombu connections are not thread-safe), ``_state`` guards the outbox and the up/down bookkeeping and
is only held for a few lines. A caller waits for ``_io`` at most ``request_timeout``, and every path
that fails a send releases it (a ``finally``), which is where the Go seed system deadlocked. The
listener is always called with neither lock held.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from cogman.brokers.base import PublishListener
from cogman.brokers.connection import (
    CONNECTION_ERRORS,
    Confirms,
    Connection,
    close_quietly,
    dial,
    discard,
    drain_ready,
    kombu,
    retrying,
)
from cogman.brokers.outbox import Entry, Outbox, Waiter, deliver
from cogman.brokers.topology import DEFAULT_EXCHANGE, Topology
from cogman.config import Config
from cogman.errors import BrokerUnavailable, TopologyError
from cogman.message import CONTENT_TYPE, Message
from cogman.priority import Priority

log = logging.getLogger("cogman.rabbitmq")

#: Messages published per pipelined round when flushing the outbox.
FLUSH_CHUNK = 500


class Publisher:
    """The publishing half of the RabbitMQ broker. Connects lazily: creating one never blocks or raises."""

    def __init__(self, url: str, config: Config, topology: Topology) -> None:
        self.url = url
        self.config = config
        self.topology = topology
        self._listener: PublishListener | None = None
        self._round_robin = {p: itertools.cycle(self.topology.names(p)) for p in Priority}
        self._state = threading.Condition()
        self._outbox = Outbox()
        self._reports: list[tuple[Entry, str | None]] = []
        self._down_since: float | None = None
        self._gone: str | None = None
        self._orphans = False
        self._io = threading.Lock()
        self._conn: Connection | None = None
        self._producer: Any = None
        self._confirms: Confirms[Entry] | None = None
        self._closing = threading.Event()
        self._flusher: threading.Thread | None = None
        #: Connect without waiting for a first send (re-enqueue must run in worker-only processes too).
        self._want_connection = bool(config.re_enqueue)
        #: A (re)connection the listener has not been told about yet.
        self._unannounced = False

    def set_listener(self, listener: PublishListener) -> None:
        self._listener = listener
        if self._want_connection:
            self._ensure_flusher()

    def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        if self._closing.is_set():
            raise BrokerUnavailable("the RabbitMQ broker was closed; create a new App to send again")
        self._ensure_flusher()
        waiter = Waiter(len(messages))
        timeout = self.config.request_timeout
        with self._state:
            entries = [Entry(m, next(self._round_robin[m.priority]), m.encode(), waiter) for m in messages]
            gone = self._gone
            parked = gone is None and (self._down_since is not None or bool(self._outbox))
            if parked:
                self._outbox.extend(entries)
                self._state.notify_all()
            known_down = self._down_since is not None
        if gone is not None:
            self._abandon(entries, gone)
            raise BrokerUnavailable(gone)
        if parked:
            if not known_down:
                waiter.wait(timeout)  # the outbox is draining over a live connection: wait our turn
            return
        deadline = time.monotonic() + timeout
        if not self._io.acquire(timeout=timeout):
            self._park(entries)  # someone holds a stuck connection: the flusher takes over
            return
        try:
            self._send_direct(entries, waiter, deadline)
        except TopologyError as exc:
            self._queue_reports(entries, str(exc))
            raise
        finally:
            self._io.release()
            self._deliver_reports()
        with self._state:
            known_down = self._down_since is not None
        if not known_down:
            waiter.wait(deadline - time.monotonic())

    def _send_direct(self, entries: list[Entry], waiter: Waiter, deadline: float) -> None:
        """Publish and collect confirms on the caller's thread (``_io`` held)."""
        with self._state:
            if self._down_since is not None or self._outbox or self._gone is not None:
                self._outbox.extend(entries)  # lost a race with a failure: keep the order
                self._state.notify_all()
                return
        sent = 0
        try:
            if self._conn is None:
                self._connect()
            for entry in entries:
                self._send_one(entry)
                sent += 1
            self._drain(lambda: waiter.unconfirmed <= 0, deadline)
        except CONNECTION_ERRORS as exc:
            self._lost(exc, entries[sent:])

    def _send_one(self, entry: Entry) -> None:
        assert self._producer is not None and self._confirms is not None
        self._producer.publish(
            entry.body,
            exchange="",
            routing_key=entry.queue,
            headers=entry.message.headers,
            message_id=entry.message.task_id,
            delivery_mode=2,
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            mandatory=True,
            retry=False,
        )
        self._confirms.sent(entry, entry.message.task_id)

    def _drain(self, finished: Any, deadline: float) -> None:
        """Read confirms until ``finished()`` or the deadline; what is still unconfirmed is orphaned."""
        assert self._conn is not None
        while not finished():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self._conn.drain_events(timeout=remaining)
            except TimeoutError:
                break
        if self._confirms is not None and self._confirms.outstanding:
            with self._state:
                self._orphans = True
                self._state.notify_all()

    def _connect(self) -> None:
        """Dial, declare the topology (once per connection), open the confirming channel (``_io`` held)."""
        connection = dial(self.url, timeout=max(1.0, min(self.config.request_timeout, 10.0)))
        try:
            channel = connection.channel()
            self.topology.declare(channel)
            self._confirms = Confirms(channel, self._on_settle)
            self._producer = kombu.Producer(channel, exchange=DEFAULT_EXCHANGE, auto_declare=False)
        except BaseException:
            discard(connection)
            self._confirms = self._producer = None
            raise
        self._conn = connection
        with self._state:
            if self._down_since is not None:
                log.info("publisher reconnected to RabbitMQ; %d message(s) in the outbox", len(self._outbox))
            self._down_since = None
            self._gone = None
            self._want_connection = False
            self._unannounced = True
            self._state.notify_all()

    def _lost(self, exc: BaseException, unsent: list[Entry]) -> None:
        """The connection broke (``_io`` held): unconfirmed and unsent go back to the outbox front."""
        unconfirmed = self._confirms.take_outstanding() if self._confirms is not None else []
        discard(self._conn)
        self._conn = self._producer = self._confirms = None
        with self._state:
            self._outbox.push_front(unconfirmed + unsent)
            self._orphans = False
            if self._down_since is None:
                self._down_since = time.monotonic()
                log.warning(
                    "publisher lost RabbitMQ (%s: %s); %d message(s) wait in the outbox",
                    type(exc).__name__,
                    exc,
                    len(self._outbox),
                )
            self._state.notify_all()
        self._ensure_flusher()

    def _park(self, entries: list[Entry]) -> None:
        with self._state:
            self._outbox.extend(entries)
            self._state.notify_all()

    # Reports to the listener, always made without the I/O lock

    def _on_settle(self, entry: Entry, failure: str | None) -> None:
        entry.waiter.unconfirmed -= 1
        with self._state:
            self._reports.append((entry, failure))

    def _queue_reports(self, entries: Iterable[Entry], failure: str) -> None:
        with self._state:
            self._reports.extend((entry, failure) for entry in entries)

    def _abandon(self, entries: list[Entry], reason: str) -> None:
        self._queue_reports(entries, reason)
        self._deliver_reports()

    def _deliver_reports(self) -> None:
        with self._state:
            reports, self._reports = self._reports, []
        deliver(self._listener, reports)

    # The flusher thread: reconnects, drains the outbox in order, collects orphaned confirms

    def _ensure_flusher(self) -> None:
        if self._flusher is None or not self._flusher.is_alive():
            with self._state:
                if (self._flusher is None or not self._flusher.is_alive()) and not self._closing.is_set():
                    self._flusher = threading.Thread(target=self._run_flusher, name="cogman-outbox", daemon=True)
                    self._flusher.start()

    def _run_flusher(self) -> None:
        while not self._closing.is_set():
            with self._state:
                if not self._busy() and not self._unannounced:
                    self._state.wait(1.0)
                busy = self._busy()
            try:
                if not busy:
                    self._tick()
                elif self._down_since is not None or self._conn is None:
                    self._reconnect()
                else:
                    self._flush()
            except Exception:
                log.exception("outbox flusher error; retrying")
                self._closing.wait(1.0)
            self._deliver_reports()
            self._announce_connection()

    def _announce_connection(self) -> None:
        """Tell the listener about a (re)connection once the outbox is flushed and its confirms reported,
        so what re-enqueue finds ``initiated`` is not also on its way from this process's outbox."""
        with self._state:
            ready = self._unannounced and self._conn is not None and not self._busy()
            if ready:
                self._unannounced = False
        if ready and self._listener is not None:
            try:
                self._listener.connected()
            except Exception:
                log.exception("the publish listener failed on connect; carrying on")

    def _busy(self) -> bool:
        return bool(self._outbox) or self._down_since is not None or self._orphans or self._want_connection

    def _reconnect(self) -> None:
        try:
            for attempt in retrying(self._closing, "publisher", self._check_gone):
                with attempt, self._io:
                    if self._conn is None:
                        self._connect()
        except CONNECTION_ERRORS:
            return  # closing
        except TopologyError as exc:
            with self._state:
                stranded = self._outbox.take_all()
                self._down_since = None
            self._abandon(stranded, str(exc))

    def _check_gone(self, exc: BaseException) -> None:
        """Past connection_timeout of continuous absence: stop accepting, fail what waits (never drop)."""
        limit = self.config.connection_timeout
        with self._state:
            if self._down_since is None:
                self._down_since = time.monotonic()
            if limit <= 0 or self._gone is not None or time.monotonic() - self._down_since < limit:
                return
            self._gone = (
                f"RabbitMQ at {self.url.split('@')[-1]} has been unreachable for more than "
                f"connection_timeout={limit:g}s (last error: {type(exc).__name__}: {exc})"
            )
            stranded = self._outbox.take_all()
        self._abandon(stranded, self._gone)

    def _flush(self) -> None:
        with self._state:
            chunk = self._outbox.take(FLUSH_CHUNK)
        deadline = time.monotonic() + self.config.request_timeout
        with self._io:
            if self._conn is None:
                with self._state:
                    self._outbox.push_front(chunk)
                return
            sent = 0
            try:
                for entry in chunk:
                    self._send_one(entry)
                    sent += 1
                confirms = self._confirms
                self._drain(lambda: confirms is None or not confirms.outstanding, deadline)
                with self._state:
                    self._orphans = bool(self._confirms and self._confirms.outstanding)
            except CONNECTION_ERRORS as exc:
                self._lost(exc, chunk[sent:])

    def _tick(self) -> None:
        """While idle, notice a closed connection early and keep heartbeats going."""
        if self._conn is None or not self._io.acquire(blocking=False):
            return
        try:
            if self._conn is not None:
                drain_ready(self._conn)
                self._conn.heartbeat_check()
        except CONNECTION_ERRORS as exc:
            self._lost(exc, [])
        finally:
            self._io.release()

    def pending(self) -> int:
        """Messages accepted by ``publish`` and not yet confirmed by the broker."""
        confirms = self._confirms
        with self._state:
            return len(self._outbox) + (len(confirms.outstanding) if confirms is not None else 0)

    def close(self) -> None:
        """Give the outbox one last flush if the broker is there, then release the connection."""
        if self._closing.is_set():
            return
        with self._state:
            flush = bool(self._outbox) and self._down_since is None and self._conn is not None
        if flush:
            self._flush()
            self._deliver_reports()
        self._closing.set()
        with self._state:
            self._state.notify_all()
        if self._flusher is not None:
            self._flusher.join(timeout=self.config.request_timeout + 1)
        with self._io:
            close_quietly(self._conn)
            self._conn = self._producer = self._confirms = None
        left = self.pending()
        if left:
            log.warning("RabbitMQ broker closed with %d message(s) never confirmed; they stay 'initiated'", left)
