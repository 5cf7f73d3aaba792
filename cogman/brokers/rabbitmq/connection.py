"""Connections to RabbitMQ: dialling, reconnect backoff, publisher-confirm bookkeeping, socket readiness.

Shared by the publishing side (``rabbitmq.py``) and the consuming side (``rabbitmq_consumer.py``).
kombu's ``Connection`` and py-amqp's channel do the AMQP; this module only adds what cogman needs on
top: which errors a reconnect heals and which are the broker refusing one message (``channel_refusal``),
write timeouts and blocked notifications, and waiting on the socket *and* a wake-up socket, so another
thread's ack does not sit in a queue until a read times out. Pipelined confirms live in ``confirms.py``.
"""

from __future__ import annotations

import contextlib
import logging
import select
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import amqp.exceptions
import kombu as _kombu
import tenacity
from kombu.transport.pyamqp import Transport as PyAMQPTransport

from cogman.brokers.rabbitmq.confirms import Confirms as Confirms  # re-exported: imported from here too
from cogman.errors import BrokerAccessRefused

#: kombu's API is mostly unannotated; cogman treats it as dynamic here rather than sprinkle ignores.
kombu: Any = _kombu
Connection = Any  # a kombu.Connection

log = logging.getLogger("cogman.rabbitmq")

#: Everything a fresh connection heals. Channel errors are in the list because a channel closed by the
#: broker (e.g. a queue deleted under a consumer) is healed the same way; the publisher tells them apart
#: first (``channel_refusal``): a message the broker refused must not be republished forever.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    *PyAMQPTransport.connection_errors,
    *PyAMQPTransport.channel_errors,
    amqp.exceptions.AMQPError,
    OSError,
    EOFError,
)

#: basic.publish's (class, method) ids, as a channel close names the method that failed.
BASIC_PUBLISH = (60, 40)


class Refusal(NamedTuple):
    """The broker closed one channel, not the connection: it refused one operation on it."""

    reason: str
    #: The refused operation was a publish: when one message is unconfirmed on the channel, it is that one.
    of_publish: bool


def channel_refusal(connection: Connection | None, exc: BaseException) -> Refusal | None:
    """RabbitMQ's refusal when ``exc`` closed a channel of a connection that is still up (406 a message
    over ``max_message_size``, 403 no write permission, 404 no such exchange); None for a lost connection.

    The class alone does not say it: py-amqp raises a connection-level close with a channel error's class
    too (its classes follow the reply code), so the connection is asked whether it is still up.
    """
    if not isinstance(exc, amqp.exceptions.ChannelError):
        return None
    try:
        alive = bool(connection is not None and connection.connected)
    except Exception:
        alive = False
    if not alive:
        return None
    return Refusal(str(exc), tuple(getattr(exc, "method_sig", None) or ()) == BASIC_PUBLISH)


#: Reconnect backoff: 0.1 s, 0.2 s, ... capped at this, each with up to half a second of jitter.
MAX_BACKOFF = 5.0
#: AMQP heartbeat asked for on every connection; the I/O loops tick it about once a second.
HEARTBEAT = 10


def dial(
    url: str,
    timeout: float,
    *,
    write_timeout: float | None = None,
    on_blocked: Callable[[str], None] | None = None,
    on_unblocked: Callable[[], None] | None = None,
) -> Connection:
    """One connection attempt per host, each bounded by ``timeout``; raises one of CONNECTION_ERRORS.

    ``url`` may list several cluster nodes separated by ``;`` (kombu's failover syntax): they are tried
    in order within one attempt, so a dead first node costs one connect, not a backoff round.

    A refused login (403) or vhost (530) raises BrokerAccessRefused at once: retrying cannot fix a
    wrong password, and an outage that never ends would hide the mistake.

    ``write_timeout`` bounds a socket write that makes no progress: a broker under a memory or disk alarm
    stops reading from publishers, and a send must not hang on a full socket buffer. ``on_blocked`` and
    ``on_unblocked`` hear RabbitMQ's ``connection.blocked`` notifications (called while draining events).
    """
    options: dict[str, Any] = {"write_timeout": write_timeout, "on_blocked": on_blocked, "on_unblocked": on_unblocked}
    connection = kombu.Connection(
        url,
        connect_timeout=timeout,
        heartbeat=HEARTBEAT,
        failover_strategy="round-robin",
        transport_options={name: value for name, value in options.items() if value is not None},
    )
    try:
        connection.ensure_connection(
            max_retries=max(1, len(connection.alt)) - 1,
            interval_start=0,
            interval_step=0,
            interval_max=0,
            reraise_as_library_errors=False,
        )
    except (amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed) as exc:
        where = describe(connection)
        discard(connection)
        raise BrokerAccessRefused(f"RabbitMQ refused {where}: {exc.reply_text or exc}") from None
    except BaseException:
        discard(connection)
        raise
    read_ahead(connection)
    return connection


#: Bytes a connection asks its socket for at once: py-amqp reads each frame exactly (two recv calls a
#: frame, six a delivery); reading ahead serves a burst of deliveries or confirms from one recv.
READ_AHEAD = 4096


def read_ahead(connection: Connection) -> None:
    """Let a plain TCP connection read ahead. py-amqp keeps what it read beyond a frame in its read
    buffer, which ``wait_readable``/``drain_ready`` look at before the socket; TLS transports keep
    their own reads."""
    transport = connection.connection.transport
    if type(transport).__name__ != "TCPTransport":
        return
    recv = transport.sock.recv
    transport._quick_recv = lambda wanted: recv(max(wanted, READ_AHEAD))


def describe(connection: Connection) -> str:
    """``user guest at 127.0.0.1:5672, vhost '/'``: where a connection goes, without the password."""
    host = connection.hostname or "localhost"
    port = connection.port or 5672
    return f"user {connection.userid!r} at {host}:{port}, vhost {connection.virtual_host!r}"


def discard(connection: Connection | None) -> None:
    """Drop a connection without talking to the broker (it may be gone); never raises."""
    if connection is None:
        return
    try:
        connection.collect()
    except Exception:
        log.debug("error while discarding a connection", exc_info=True)


def close_quietly(connection: Connection | None) -> None:
    """Close politely when the broker is there (unacked messages go back at once), else discard."""
    if connection is None:
        return
    try:
        connection.release()
    except Exception:
        discard(connection)


def retrying(stop: threading.Event, what: str, on_failure: Callable[[BaseException], None]) -> tenacity.Retrying:
    """Tenacity policy for reconnecting: exponential backoff with jitter, capped, until ``stop`` is set.

    The sleep is ``stop.wait`` so closing a broker or consumer interrupts a backoff at once.
    ``on_failure`` sees every failed attempt (the publisher uses it to enforce connection_timeout).
    """

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None:
            on_failure(exc)
            log.warning("%s: RabbitMQ unreachable (attempt %d): %s", what, state.attempt_number, exc)

    def pause(seconds: float) -> None:
        stop.wait(seconds)

    return tenacity.Retrying(
        sleep=pause,
        stop=lambda _state: stop.is_set(),
        wait=tenacity.wait_exponential(multiplier=0.1, max=MAX_BACKOFF) + tenacity.wait_random(0, 0.5),
        retry=tenacity.retry_if_exception_type(CONNECTION_ERRORS),
        before_sleep=before_sleep,
        reraise=True,
    )


class Waker:
    """A socket pair another thread writes a byte to, so a wait on the AMQP socket returns at once.

    It also owns the selector the consumer waits on, with the AMQP socket registered once per
    connection rather than once per wait. ``selectors`` (epoll, kqueue) and sockets work with any
    descriptor number; ``select.select`` raised for descriptors from 1024 on, which a busy process
    reaches.
    """

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._read, selectors.EVENT_READ)
        self._watched: Any = None
        self._lock = threading.Lock()
        self._closed = False
        #: A byte is written and not yet cleared.
        self._pending = False

    def fileno(self) -> int:
        return self._read.fileno()

    def wake(self) -> None:
        """Handler threads wake the consumer for every ack: a wake-up already on its way (written, not
        yet cleared) covers this one too, so only the first costs a system call."""
        if self._pending:
            return
        with self._lock:
            if self._closed:  # never write to a closed descriptor: its number may be reused already
                return
            self._pending = True
            with contextlib.suppress(OSError):  # a full buffer means a wake-up is already pending
                self._write.send(b"x")

    def clear(self) -> None:
        """Called before the waiter looks at what it was woken for. The flag drops only after the bytes
        are read: a wake-up skipped as pending meanwhile is one the waiter has not looked past yet, and
        one after the flag dropped writes a byte the next wait sees."""
        try:
            while self._read.recv(4096):
                pass
        except OSError:  # BlockingIOError: nothing left to read
            pass
        self._pending = False

    def wait(self, sock: Any, timeout: float) -> bool:
        """Wait until ``sock`` is readable (True), or a wake-up or ``timeout`` comes first (False)."""
        if sock is not self._watched:
            if self._watched is not None:
                with contextlib.suppress(KeyError, ValueError, OSError):  # the old socket may be closed
                    self._selector.unregister(self._watched)
            self._selector.register(sock, selectors.EVENT_READ)
            self._watched = sock
        ready = {key.fileobj for key, _ in self._selector.select(timeout)}
        if self._read in ready:
            self.clear()
        return sock in ready

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._selector.close()
            for end in (self._read, self._write):
                with contextlib.suppress(OSError):
                    end.close()


def _buffered(transport: Any) -> bool:
    """py-amqp reads frames exactly (it never reads ahead), so bytes of a frame it has not finished are
    either in its small read buffer, in the TLS layer, or still in the socket."""
    sock = transport.sock
    return bool(getattr(transport, "_read_buffer", b"")) or (hasattr(sock, "pending") and bool(sock.pending()))


def _readable_now(sock: Any) -> bool:
    """One non-blocking readiness check with no descriptor-number limit: poll, which needs no descriptor
    of its own (an epoll selector would open one per check), called directly since it runs per frame."""
    if _poll is None:
        with selectors.DefaultSelector() as probe:
            probe.register(sock, selectors.EVENT_READ)
            return bool(probe.select(0))
    poller = _poll()
    poller.register(sock, _POLLIN)
    return bool(poller.poll(0))


_poll: Callable[[], Any] | None = getattr(select, "poll", None)
_POLLIN: int = getattr(select, "POLLIN", 1)


#: How long ``drain_ready`` waits for the rest of a frame that has begun to arrive.
FRAME_SLICE = 0.5


def wait_readable(connection: Connection, waker: Waker, timeout: float) -> bool:
    """Wait until the AMQP socket has data (True) or ``waker`` fires or ``timeout`` passes (False)."""
    transport = connection.connection.transport
    if _buffered(transport):
        return True
    return waker.wait(transport.sock, timeout)


def drain_ready(connection: Connection, limit: int = 256) -> int:
    """Process the methods already arrived, without waiting for more; returns how many ran.

    A frame whose rest is late is waited for at most ``FRAME_SLICE`` (py-amqp keeps the part it read).
    py-amqp sets that timeout on the socket and back around every frame (a delivery is three frames:
    six system calls, 5% of a busy worker's interpreter time under py-spy), unless the socket has it
    already: so it is set once for the whole round here. The caller holds the connection's I/O."""
    transport = connection.connection.transport
    sock = transport.sock
    if not _buffered(transport) and not _readable_now(sock):
        return 0
    handled = 0
    previous = sock.gettimeout()
    sock.settimeout(FRAME_SLICE)
    try:
        while handled < limit:
            try:
                connection.drain_events(timeout=FRAME_SLICE)
            except TimeoutError:
                break
            handled += 1
            if not _buffered(transport) and not _readable_now(sock):
                break
    finally:
        with contextlib.suppress(OSError):  # a socket the frame's handler closed: nothing to restore
            sock.settimeout(previous)
    return handled
