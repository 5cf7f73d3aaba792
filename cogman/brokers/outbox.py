"""The offline outbox: messages a client accepted but the broker has not confirmed yet, in send order.

``publish`` must neither raise nor hang while RabbitMQ is away, yet a task must never be dropped
silently. So a message the broker has not confirmed lives here until one of two things happens: the
broker confirms it (the listener hears ``confirmed``, the record becomes ``queued``) or the broker
stayed away past ``connection_timeout`` (the listener hears ``abandoned``, the record becomes
``failed``). Messages whose connection died before their confirm came back return to the *front*, in
their original order, so the flush keeps send order. A confirmed message has left the outbox for good,
so it is never published twice from here (a message whose confirm was lost with the connection is
published again: that is the at-least-once the worker dedupes).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cogman.brokers.base import PublishListener
from cogman.message import Message

log = logging.getLogger("cogman.rabbitmq")


class Waiter:
    """One ``publish`` call, waiting until each of its messages is confirmed or abandoned."""

    __slots__ = ("_done", "_lock", "_unreported", "unconfirmed")

    def __init__(self, count: int) -> None:
        #: Messages still waiting for a confirm; only touched by the thread holding the I/O lock.
        self.unconfirmed = count
        self._unreported = count
        self._lock = threading.Lock()
        self._done = threading.Event()

    def reported(self, count: int) -> None:
        """The listener has been told about ``count`` more of this call's messages."""
        with self._lock:
            self._unreported -= count
            if self._unreported <= 0:
                self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(max(0.0, timeout))


@dataclass(eq=False, slots=True)
class Entry:
    """One message on its way: the encoded body and the queue it was routed to, kept across retries."""

    message: Message
    queue: str
    body: bytes
    waiter: Waiter = field(repr=False)


class Outbox:
    """A FIFO of entries. Not thread-safe by itself: the broker guards it with its state lock."""

    def __init__(self) -> None:
        self._entries: deque[Entry] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def extend(self, entries: Iterable[Entry]) -> None:
        self._entries.extend(entries)

    def push_front(self, entries: list[Entry]) -> None:
        """Put entries back ahead of everything, keeping their order (they were sent first)."""
        self._entries.extendleft(reversed(entries))

    def take(self, limit: int) -> list[Entry]:
        taken: list[Entry] = []
        while self._entries and len(taken) < limit:
            taken.append(self._entries.popleft())
        return taken

    def take_all(self) -> list[Entry]:
        taken = list(self._entries)
        self._entries.clear()
        return taken


def deliver(listener: PublishListener | None, reports: list[tuple[Entry, str | None]]) -> None:
    """Tell the listener what became of messages (``failure`` None = confirmed), then wake their senders.

    Confirmed ones go in one ``confirmed`` call (one backend round trip for a whole batch); failures are
    grouped by reason. A listener that raises is logged: the broker's part is done either way.
    """
    if not reports:
        return
    confirmed = [entry.message for entry, failure in reports if failure is None]
    failures: dict[str, list[Message]] = {}
    for entry, failure in reports:
        if failure is not None:
            failures.setdefault(failure, []).append(entry.message)
    calls: list[tuple[Any, ...]] = [(listener.confirmed, confirmed)] if listener is not None and confirmed else []
    for reason, messages in failures.items():
        log.error("%d message(s) will never be published: %s", len(messages), reason)
        if listener is not None:
            calls.append((listener.abandoned, messages, reason))
    for call, *args in calls:
        try:
            call(*args)
        except Exception:
            log.exception("the publish listener failed; the broker's part is done regardless")
    for entry, _ in reports:
        entry.waiter.reported(1)
