"""The publishing connection and its one confirming channel, as the publisher uses them.

Used by one thread at a time: the publisher's I/O lock is held around every call, because kombu
connections are not thread-safe. Nothing here decides what to do when something fails; it raises, and
the publisher sorts the error (lost connection, refused message, refused login) and moves its state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import amqp
import amqp.exceptions

from cogman.brokers.rabbitmq.amqp_frames import publish_frames, write_frames
from cogman.brokers.rabbitmq.confirms import Confirms
from cogman.brokers.rabbitmq.connection import Connection, close_quietly, describe, dial, discard, drain_ready
from cogman.brokers.rabbitmq.outbox import Entry
from cogman.brokers.rabbitmq.topology import Topology
from cogman.config.settings import Config
from cogman.errors import BrokerAccessRefused
from cogman.message import CONTENT_TYPE

log = logging.getLogger("cogman.rabbitmq")


class PublishLink:
    """One connection, its topology (the delay ladder too) declared once, and a channel in confirm mode."""

    def __init__(
        self,
        url: str,
        config: Config,
        topology: Topology,
        on_settle: Callable[[Entry, str | None], None],
        on_blocked: Callable[[str], None],
        on_unblocked: Callable[[], None],
    ) -> None:
        self.url = url
        self.config = config
        self.topology = topology
        self._on_settle = on_settle
        self._on_blocked = on_blocked
        self._on_unblocked = on_unblocked
        self.connection: Connection | None = None
        self._confirms: Confirms[Entry] | None = None
        #: The listener has heard ``connected()`` about this connection.
        self.announced = False

    @property
    def connected(self) -> bool:
        return self.connection is not None

    def in_flight(self) -> int:
        """Messages sent on this channel and not settled yet (safe to read from any thread)."""
        confirms = self._confirms
        return len(confirms.outstanding) if confirms is not None else 0

    def open(self) -> None:
        """Dial, declare the topology and the delay ladder, open the confirming channel.

        Raises BrokerAccessRefused for a refused login or vhost, or a channel error while declaring
        (no permission to configure the queues), TopologyError for a queue declared with other
        arguments, one of CONNECTION_ERRORS when RabbitMQ cannot be reached."""
        timeout = max(1.0, min(self.config.request_timeout, 10.0))
        connection = dial(
            self.url,
            timeout=timeout,
            write_timeout=max(0.5, self.config.request_timeout),
            on_blocked=self._on_blocked,
            on_unblocked=self._on_unblocked,
        )
        try:
            channel = connection.channel()
            try:
                self.topology.declare(channel)
                self.topology.declare_delays(connection, ladder=True)
            except amqp.exceptions.ChannelError as exc:
                where = describe(connection)
                raise BrokerAccessRefused(f"RabbitMQ refused to declare cogman's queues for {where}: {exc}") from None
            self._confirms = Confirms(channel, self._on_settle)
        except BaseException:
            discard(connection)
            self._confirms = None
            raise
        self.connection = connection
        self.announced = False

    def send(self, entry: Entry) -> int:
        """Publish one message (mandatory, persistent); returns its delivery tag. A message with an
        ``eta`` goes into the delay ladder for what is left of its delay now.

        The frames are packed here (amqp_frames.py) and written through py-amqp's transport: the body is
        encoded already, and py-amqp's ``basic_publish`` (a socket poll and a Message object per call)
        would cost more than the write itself."""
        assert self._confirms is not None and self.connection is not None
        exchange, routing_key = self.topology.route(entry.queue, entry.message.eta)
        message = entry.message
        amqp_connection = self.connection.connection
        frames = publish_frames(
            self._confirms.channel.channel_id,
            exchange,
            routing_key,
            entry.body,
            headers=message.headers,
            message_id=message.task_id,
            content_type="" if message.raw_body is not None else CONTENT_TYPE,  # Go-format: none (gowire)
            content_encoding="utf-8",
            frame_max=amqp_connection.frame_max,
        )
        message.sent()  # before the write: a write cut short may have delivered it, so a resend is a copy
        write_frames(amqp_connection, frames)
        self._confirms.sent(entry, message.task_id)
        return self._confirms.last_tag

    def settled_through(self, tag: int) -> bool:
        return self._confirms is None or self._confirms.settled_through(tag)

    def drain(self, finished: Callable[[], bool], deadline: float) -> None:
        """Read confirms (and notifications) until ``finished()`` or the deadline."""
        assert self.connection is not None
        while not finished():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                self.connection.drain_events(timeout=remaining)
            except TimeoutError:
                return

    def take_orphans(self) -> list[Entry]:
        """The unconfirmed messages of the channel, in publish order; after a channel error."""
        return self._confirms.take_outstanding() if self._confirms is not None else []

    def restart_channel(self) -> None:
        """Confirm mode again on the channel the broker closed (py-amqp has reopened it already)."""
        assert self._confirms is not None
        channel = self._confirms.channel
        if not channel.is_open:
            channel.open()
        self._confirms.restart()

    def tick(self) -> None:
        """While idle: read what arrived (late confirms, blocked/unblocked, a close) and keep heartbeats."""
        if self.connection is not None:
            drain_ready(self.connection)
            self.connection.heartbeat_check()

    def drop(self) -> list[Entry]:
        """Forget a broken connection without talking to the broker; returns what was unconfirmed."""
        orphans = self.take_orphans()
        discard(self.connection)
        self.connection = self._confirms = None
        return orphans

    def close(self) -> list[Entry]:
        """Close politely (the broker may be there); returns what was still unconfirmed."""
        orphans = self.take_orphans()
        close_quietly(self.connection)
        self.connection = self._confirms = None
        return orphans
