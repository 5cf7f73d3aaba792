"""In-process broker: Cogman's queue topology in deques, for the embedded default and for tests.

Messages are stored encoded, as bytes and headers, so the worker exercises the same decode path (and
meets the same poison messages) as with RabbitMQ. Nothing leaves the process. A message with an ``eta``
waits in a heap ordered by it and joins its queue once due; ``receive`` hands out only due messages and
wakes when the earliest one becomes due.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from cogman.brokers.base import (
    DEAD_LETTER_QUEUE,
    HEADER_DEAD_LETTER_REASON,
    Delivery,
    PublishListener,
    QueueStats,
    Receipt,
    prefixed,
    queue_names,
)
from cogman.message import CONTENT_TYPE, Message
from cogman.priority import Priority

#: The name the heap of messages waiting for their ``eta`` goes by in ``queue_stats``.
DELAYED_QUEUE = "cogman.delay"


class MemoryBroker:
    """``prefix`` (``Config.queue_prefix``) names the queues as RabbitMQ's would be; nothing else is shared."""

    def __init__(
        self, high_queue_count: int = 1, low_queue_count: int = 1, *, max_redeliveries: int = 5, prefix: str = ""
    ) -> None:
        self.max_redeliveries = max_redeliveries
        self.prefix = prefix
        self.queues: dict[Priority, dict[str, deque[Delivery]]] = {
            Priority.HIGH: {name: deque() for name in queue_names(Priority.HIGH, high_queue_count, prefix)},
            Priority.LOW: {name: deque() for name in queue_names(Priority.LOW, low_queue_count, prefix)},
        }
        self._round_robin = {p: itertools.cycle(list(q)) for p, q in self.queues.items()}
        self._dead: list[Delivery] = []
        #: Messages not due yet: (due, epoch seconds; arrival order; delivery).
        self._delayed: list[tuple[float, int, Delivery]] = []
        self._arrivals = itertools.count()
        self._listener: PublishListener | None = None
        self._ready = threading.Condition()
        self._consumers: weakref.WeakSet[MemoryConsumer] = weakref.WeakSet()

    def set_listener(self, listener: PublishListener) -> None:
        self._listener = listener
        listener.connected()

    def publish(self, messages: Sequence[Message], *, wait: bool = True) -> Receipt:
        with self._ready:
            for message in messages:
                due = None if message.eta is None else message.eta.timestamp()
                go_format = message.raw_body is not None  # carries no content_type, as on RabbitMQ
                self.put(message.encode(), message.headers, message.priority, due=due, content_type=not go_format)
                message.sent()
        if self._listener is not None:
            self._listener.confirmed(messages)
        return Receipt.confirmed()

    def publish_each(self, messages: Sequence[Message], receipts: Sequence[Receipt]) -> None:
        self.publish(messages, wait=False)
        for receipt in receipts:
            receipt.settle()

    def pending(self) -> int:
        """Nothing waits for a confirm: a memory queue takes every message at once."""
        return 0

    def unconfirmed_ids(self) -> list[str]:
        return []

    def put(
        self,
        body: bytes,
        headers: Mapping[str, object],
        priority: Priority,
        queue: str | None = None,
        due: float | None = None,
        content_type: bool = True,
    ) -> None:
        """Enqueue raw bytes, as a foreign producer would (tests use it to send poison messages);
        ``due`` (epoch seconds) holds it back until then. ``content_type=False`` sends it without
        cogman's ``content_type``, as Go Cogman does (cogman/gowire)."""
        with self._ready:
            name = queue or next(self._round_robin[priority])
            properties = {"content_type": CONTENT_TYPE} if content_type else {}
            delivery = Delivery(body, dict(headers), name, priority, properties=properties)
            if due is not None and due > time.time():
                heapq.heappush(self._delayed, (due, next(self._arrivals), delivery))
                self._ready.notify_all()  # a waiting receive may now have to wake earlier
            else:
                self.queues[priority][name].append(delivery)
                self._ready.notify()

    def consume(self, priorities: Iterable[Priority], prefetch: int) -> MemoryConsumer:
        consumer = MemoryConsumer(self, tuple(sorted(set(priorities), key=lambda p: p.order)))
        self._consumers.add(consumer)
        return consumer

    def dead_letters(self) -> list[Delivery]:
        with self._ready:
            return list(self._dead)

    def depth(self) -> int:
        """Messages waiting in the queues (not delivered)."""
        with self._ready:
            return sum(len(q) for family in self.queues.values() for q in family.values())

    def delayed(self) -> int:
        """Messages waiting for their ``eta``."""
        with self._ready:
            return len(self._delayed)

    def next_due(self) -> float | None:
        """Seconds until the earliest delayed message is due (0 if it is); None when none waits."""
        with self._ready:
            return max(0.0, self._delayed[0][0] - time.time()) if self._delayed else None

    def close(self) -> None:
        """Nothing to release; queued messages stay for the next consumer."""

    def _take(self, priorities: tuple[Priority, ...]) -> Delivery | None:
        """Lock held. Due delayed messages join their queues first."""
        now = time.time()
        while self._delayed and self._delayed[0][0] <= now:
            delivery = heapq.heappop(self._delayed)[2]
            self.queues[delivery.priority][delivery.queue].append(delivery)
        for priority in priorities:
            for queue in self.queues[priority].values():
                if queue:
                    return queue.popleft()
        return None

    def _give_back(self, delivery: Delivery) -> None:
        with self._ready:
            delivery.redelivered = True
            self.queues[delivery.priority][delivery.queue].appendleft(delivery)
            self._ready.notify()

    def _bury(self, delivery: Delivery, reason: str) -> None:
        with self._ready:
            delivery.headers[HEADER_DEAD_LETTER_REASON] = reason
            self._dead.append(delivery)

    # Operator views and actions

    def queue_stats(self) -> list[QueueStats]:
        with self._ready:
            consumers = [c for c in list(self._consumers) if not c._cancelled]
            stats = [
                QueueStats(name, priority.value, len(queue), sum(priority in c._priorities for c in consumers))
                for priority, family in self.queues.items()
                for name, queue in family.items()
            ]
            stats.append(QueueStats(prefixed(self.prefix, DEAD_LETTER_QUEUE), "dead_letter", len(self._dead), 0))
            stats.append(QueueStats(prefixed(self.prefix, DELAYED_QUEUE), "delayed", len(self._delayed), 0))
        return stats

    def purge(self, settle: Callable[[list[Delivery]], None]) -> int:
        with self._ready:
            taken = [(delivery, queue) for family in self.queues.values() for queue in family.values()
                     for delivery in queue]  # fmt: skip
            for family in self.queues.values():
                for queue in family.values():
                    queue.clear()
        try:
            if taken:
                settle([delivery for delivery, _ in taken])
        except BaseException:
            with self._ready:  # not settled: every message goes back where it was
                for delivery, queue in reversed(taken):
                    queue.appendleft(delivery)
                self._ready.notify_all()
            raise
        return len(taken)


class MemoryConsumer:
    """Pulls from the broker's deques; unacked deliveries go back to the queue on ``close``."""

    def __init__(self, broker: MemoryBroker, priorities: tuple[Priority, ...]) -> None:
        self._broker = broker
        self._priorities = priorities
        self._unacked: dict[int, Delivery] = {}
        self._tags = itertools.count()
        self._lock = threading.Lock()
        self._cancelled = False

    def receive(self, timeout: float, priorities: Collection[Priority] | None = None) -> Delivery | None:
        deadline = time.monotonic() + timeout
        wanted = self._priorities if priorities is None else tuple(p for p in self._priorities if p in priorities)
        with self._broker._ready:
            while True:
                delivery = None if self._cancelled else self._broker._take(wanted)
                remaining = deadline - time.monotonic()
                if delivery is not None or remaining <= 0:
                    break
                delayed = self._broker._delayed
                if delayed and not self._cancelled:
                    remaining = min(remaining, max(0.0, delayed[0][0] - time.time()))
                self._broker._ready.wait(remaining)
        if delivery is not None:
            delivery.tag = next(self._tags)
            with self._lock:
                self._unacked[delivery.tag] = delivery
        return delivery

    def _settle(self, delivery: Delivery) -> bool:
        with self._lock:
            return self._unacked.pop(delivery.tag, None) is not None

    def ack(self, delivery: Delivery) -> None:
        self._settle(delivery)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        if self._settle(delivery):
            self._broker._bury(delivery, reason)

    def requeue(self, delivery: Delivery) -> None:
        if self._settle(delivery):
            self._broker._give_back(delivery)

    def redeliver(self, delivery: Delivery, reason: str) -> None:
        if delivery.redeliveries >= self._broker.max_redeliveries:
            self.dead_letter(delivery, f"{reason} (given back {delivery.redeliveries} time(s) already)")
            return
        if self._settle(delivery):
            delivery.redeliveries += 1
            self._broker._give_back(delivery)

    def is_current(self, delivery: Delivery) -> bool:
        """A memory consumer never loses its connection."""
        return True

    def cancel(self) -> None:
        with self._broker._ready:
            self._cancelled = True
            self._broker._ready.notify_all()

    def close(self) -> None:
        self._broker._consumers.discard(self)
        with self._lock:
            left, self._unacked = list(self._unacked.values()), {}
        for delivery in reversed(left):
            self._broker._give_back(delivery)
