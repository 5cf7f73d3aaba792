"""A worker's consumer that counts the deliveries it holds unacked, per queue, for ``/stats``.

RabbitMQ tells a passive ``queue_declare`` how many messages are ready and how many consumers a queue
has, not how many are delivered and unacked (that needs the management plugin). Each worker counts its
own instead: a delivery is held from the moment the transport buffered it (``buffered()`` of the RabbitMQ
consumer: prefetched, not handed out yet) or handed it to the worker, until the worker settles it (ack,
dead-letter, requeue, redeliver). Its heartbeat reports the counts (middleware/heartbeat.py), and the
queue figures sum them over the live workers (middleware/queue_stats.py).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection
from typing import Any

from cogman.brokers.base import Consumer, Delivery
from cogman.priority import Priority


class HeldDeliveries:
    """Wraps a Consumer; every call goes through to it."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self._out: dict[int, str] = {}  # id(delivery) -> its queue, handed out and not settled
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)

    def held(self) -> dict[str, int]:
        """Unacked deliveries per queue: handed out and not settled, plus buffered by the transport."""
        with self._lock:
            counts = Counter(self._out.values())
        buffered = getattr(self.consumer, "buffered", None)
        counts.update(delivery.queue for delivery in (buffered() if buffered is not None else ()))
        return dict(counts)

    def receive(self, timeout: float, priorities: Collection[Priority] | None = None) -> Delivery | None:
        delivery = self.consumer.receive(timeout, priorities)
        if delivery is not None:
            with self._lock:
                self._out[id(delivery)] = delivery.queue
        return delivery

    def _settled(self, delivery: Delivery) -> None:
        with self._lock:
            self._out.pop(id(delivery), None)

    def ack(self, delivery: Delivery) -> None:
        self._settled(delivery)
        self.consumer.ack(delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._settled(delivery)
        self.consumer.dead_letter(delivery, reason)

    def requeue(self, delivery: Delivery) -> None:
        self._settled(delivery)
        self.consumer.requeue(delivery)

    def redeliver(self, delivery: Delivery, reason: str) -> None:
        self._settled(delivery)
        self.consumer.redeliver(delivery, reason)

    def is_current(self, delivery: Delivery) -> bool:
        return self.consumer.is_current(delivery)

    def cancel(self) -> None:
        self.consumer.cancel()

    def close(self) -> None:
        self.consumer.close()
        with self._lock:
            self._out.clear()
