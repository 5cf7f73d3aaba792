"""RabbitMQ consumer: one I/O thread owns the connection; the worker's threads talk to it through queues.

kombu connections are not thread-safe, and the worker acks from its handler threads. So, as Dramatiq
does, acks, rejects and dead-letters are queued and carried out by the one thread that owns the
connection, between reads. That thread waits on the socket *and* a wake-up pipe, so an ack goes out
as soon as it is queued, not when a read times out. Deliveries are buffered per priority and
``receive`` hands out high before low.

Each queue gets its own basic.consume with a per-consumer prefetch (``basic.qos`` global=False), so
however many low messages are unacked, the high queues still deliver.

When the connection breaks, the thread reconnects with tenacity (forever, until closed), declares the
topology again and consumes again: the Go seed system stayed up with zero consumers here. Every
connection has a generation number, carried in each delivery's tag. A delivery from an older
generation cannot be acked (its channel is gone, and RabbitMQ has requeued it already), so its ack is
dropped; the redelivered copy reaches the worker, which skips tasks that are already final.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from cogman.brokers.base import HEADER_DEAD_LETTER_REASON, Delivery
from cogman.brokers.connection import (
    CONNECTION_ERRORS,
    MAX_BACKOFF,
    Confirms,
    Connection,
    Waker,
    close_quietly,
    dial,
    discard,
    drain_ready,
    kombu,
    retrying,
    wait_readable,
)
from cogman.brokers.topology import DEFAULT_EXCHANGE, Topology
from cogman.config import Config
from cogman.errors import PublishError, TopologyError
from cogman.priority import Priority

log = logging.getLogger("cogman.rabbitmq")


@dataclass(frozen=True, slots=True)
class Tag:
    """A delivery's handle: which connection it came on, and RabbitMQ's delivery tag there."""

    generation: int
    delivery_tag: int


def delivery_from(message: Any, queue: str, priority: Priority, tag: Tag | None) -> Delivery:
    """A cogman Delivery from a kombu message, body untouched (the worker decodes it)."""
    body = message.body
    if isinstance(body, str):  # a channel with auto_decode on; ours have it off
        body = body.encode(message.content_encoding or "utf-8")
    return Delivery(
        body=bytes(body),
        headers=dict(message.headers or {}),
        queue=queue,
        priority=priority,
        tag=tag,
        redelivered=bool(message.delivery_info.get("redelivered", False)),
        properties=dict(message.properties or {}),
    )


class RabbitMQConsumer:
    """Consumes every queue of the given priority families; see the module docstring."""

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
        self._fatal: BaseException | None = None
        self._generation = 0
        self._conn: Connection | None = None
        self._channel: Any = None
        self._dlq: tuple[Any, Confirms[int]] | None = None
        self._dlq_failure: str | None = None
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
                    raise self._fatal
                for priority in wanted:
                    if self._buffers[priority]:
                        return self._buffers[priority].popleft()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing.is_set():
                    return None
                self._ready.wait(remaining)

    def ack(self, delivery: Delivery) -> None:
        self._queue_action("ack", delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._queue_action("dead_letter", delivery, reason)

    def requeue(self, delivery: Delivery) -> None:
        self._queue_action("requeue", delivery)

    def redeliver(self, delivery: Delivery, reason: str) -> None:
        raise NotImplementedError("issue 7: counted redelivery")

    def is_current(self, delivery: Delivery) -> bool:
        tag = delivery.tag
        return isinstance(tag, Tag) and tag.generation == self._generation

    def cancel(self) -> None:
        raise NotImplementedError("issue 7: basic.cancel on stop")

    def _queue_action(self, action: str, delivery: Delivery, reason: str = "") -> None:
        self._actions.append((action, delivery, reason))  # deque.append is thread-safe
        self._waker.wake()

    def close(self) -> None:
        """Carry out the queued acks, then close: unacked deliveries go back to their queues."""
        self._closing.set()
        self._waker.wake()
        with self._ready:
            self._ready.notify_all()
        self._thread.join(timeout=max(5.0, self.config.request_timeout * 2))

    # The I/O thread

    def _run(self) -> None:
        try:
            while not self._closing.is_set():
                if self._conn is None:
                    self._reconnect()
                    continue
                try:
                    self._serve()
                except CONNECTION_ERRORS as exc:
                    self._drop(exc)
                except TopologyError:
                    raise
                except Exception as exc:  # never end up alive with zero consumers (the Go seed's bug)
                    log.exception("unexpected error in the RabbitMQ consumer; reconnecting")
                    self._drop(exc)
                    self._closing.wait(1.0)
            try:
                self._settle_actions()
            except CONNECTION_ERRORS as exc:
                log.warning("could not settle the last acks before closing (%s); RabbitMQ redelivers", exc)
        except TopologyError as exc:
            log.error("%s", exc)
            with self._ready:
                self._fatal = exc
                self._ready.notify_all()
        except Exception:
            log.exception("RabbitMQ consumer thread crashed")
        finally:
            close_quietly(self._conn)
            self._conn = None
            self._waker.close()

    def _serve(self) -> None:
        """One round: carry out queued actions, wait for the socket or a wake-up, read what arrived."""
        assert self._conn is not None
        self._settle_actions()
        if self._actions:
            return
        if wait_readable(self._conn, self._waker, timeout=1.0):
            drain_ready(self._conn)
        self._conn.heartbeat_check()

    def _connect(self) -> None:
        connection = dial(self.url, timeout=max(1.0, min(self.config.request_timeout, 10.0)))
        try:
            channel = connection.channel()
            channel.auto_decode = False  # the worker decodes bytes itself; bad UTF-8 is its to judge
            self.topology.declare(channel, self.priorities)
            channel.basic_qos(prefetch_size=0, prefetch_count=self.prefetch, a_global=False)
            dlq_channel = connection.channel()
            confirms: Confirms[int] = Confirms(dlq_channel, self._on_dead_letter_confirmed)
            dlq = (kombu.Producer(dlq_channel, exchange=DEFAULT_EXCHANGE, auto_declare=False), confirms)
            with self._ready:
                self._generation += 1
                generation = self._generation
            for queue, priority in self.topology.queues(self.priorities):
                consumer = kombu.Consumer(channel, queues=[queue], no_ack=False, auto_declare=False)
                consumer.on_message = self._on_message_for(queue.name, priority, generation)
                consumer.consume()
        except BaseException:
            discard(connection)
            raise
        self._conn, self._channel, self._dlq = connection, channel, dlq

    def _on_message_for(self, queue: str, priority: Priority, generation: int) -> Any:
        def on_message(message: Any) -> None:
            delivery = delivery_from(message, queue, priority, Tag(generation, message.delivery_tag))
            with self._ready:
                self._buffers[priority].append(delivery)
                self._ready.notify()

        return on_message

    def _reconnect(self) -> None:
        try:
            for attempt in retrying(self._closing, "worker", lambda exc: None):
                with attempt:
                    self._connect()
        except CONNECTION_ERRORS:
            return  # closing
        except TopologyError:
            raise
        except Exception:
            log.exception("unexpected error while reconnecting to RabbitMQ; trying again")
            self._closing.wait(MAX_BACKOFF)
            return
        self.reconnects += 1
        log.info("worker reconnected to RabbitMQ and consumes again (generation %d)", self._generation)

    def _drop(self, exc: BaseException) -> None:
        """The connection broke: forget buffered deliveries (RabbitMQ requeues them) and reconnect."""
        log.warning("worker lost RabbitMQ (%s: %s); reconnecting", type(exc).__name__, exc)
        discard(self._conn)
        self._conn, self._channel, self._dlq = None, None, None
        with self._ready:
            dropped = sum(len(b) for b in self._buffers.values())
            for buffer in self._buffers.values():
                buffer.clear()
        if dropped:
            log.info("%d buffered delivery(ies) will be redelivered by RabbitMQ", dropped)

    def _settle_actions(self) -> None:
        """Carry out the acks, requeues and dead-letters queued by handler threads."""
        while self._actions:
            action, delivery, reason = self._actions.popleft()
            tag = delivery.tag
            if not isinstance(tag, Tag) or tag.generation != self._generation or self._channel is None:
                log.debug("%s of a delivery from a lost connection dropped; RabbitMQ redelivers it", action)
                continue
            if action == "ack":
                self._channel.basic_ack(tag.delivery_tag)
            elif action == "requeue":
                self._channel.basic_reject(tag.delivery_tag, requeue=True)
            else:
                try:
                    self._bury(delivery, reason)
                except PublishError as exc:
                    # Not acked: reconnecting gives the message back, and the worker dead-letters it again.
                    self._actions.appendleft((action, delivery, reason))
                    raise ConnectionError(str(exc)) from exc
                self._channel.basic_ack(tag.delivery_tag)

    def _bury(self, delivery: Delivery, reason: str) -> None:
        """Publish to the dead-letter queue and wait for its confirm, so the ack after it loses nothing."""
        assert self._dlq is not None and self._conn is not None
        producer, confirms = self._dlq
        headers = dict(delivery.headers)
        headers[HEADER_DEAD_LETTER_REASON] = reason
        headers["x-cogman-source-queue"] = delivery.queue
        properties = {k: v for k, v in delivery.properties.items() if k in ("message_id", "content_encoding")}
        producer.publish(
            delivery.body,
            exchange="",
            routing_key=self.topology.dead_letter_queue().name,
            headers=headers,
            delivery_mode=2,
            content_type=str(delivery.properties.get("content_type") or "application/octet-stream"),
            retry=False,
            **properties,
        )
        confirms.sent(0, str(properties.get("message_id", "")))
        self._dlq_failure = None
        deadline = time.monotonic() + self.config.request_timeout
        while confirms.outstanding:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishError(f"no confirm for the dead-letter copy of a message from {delivery.queue}")
            try:
                self._conn.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if self._dlq_failure is not None:
            raise PublishError(f"dead-letter publish failed: {self._dlq_failure}")

    def _on_dead_letter_confirmed(self, _item: int, failure: str | None) -> None:
        self._dlq_failure = failure
