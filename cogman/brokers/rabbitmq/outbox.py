"""The outbox: every message a publisher accepted and RabbitMQ has not confirmed yet, and, in send order,
those waiting to be sent again.

``publish`` must neither raise nor hang while RabbitMQ is away, yet a task must never be dropped
silently. So an accepted message is *held* here until one of two things happens: the broker confirms
it (the listener hears ``confirmed``, the record becomes ``queued``) or it will never be published (the
broker refused it, or stayed away past ``connection_timeout``: the listener hears ``abandoned``, the
record becomes ``failed``). Either way its ``Receipt`` is settled then, once. Messages whose connection
died before their confirm came back return to the *front*, in their original order, so the flush keeps
send order (one whose confirm was lost with the connection is published again: that is the
at-least-once the worker dedupes).

A channel the broker closed because it refused one message orphans every message in flight on it.
Those become *suspects*: each is sent again alone, with nothing else in flight, so the next refusal
names its message and the others go through. A message is a suspect at most once per refusal, so
nothing loops. While suspects remain, new sends wait behind them.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cogman.brokers.base import PublishListener, Receipt
from cogman.message import Message

log = logging.getLogger("cogman.rabbitmq")


@dataclass(eq=False, slots=True)
class Entry:
    """One message on its way: the encoded body and the queue it was routed to, kept across retries."""

    message: Message
    queue: str
    body: bytes
    receipt: Receipt = field(repr=False)
    #: Orphaned by a channel the broker closed: from now on it is sent alone.
    suspect: bool = False


class Outbox:
    """Held entries and the FIFO of those waiting. Not thread-safe: the publisher's state lock guards it."""

    def __init__(self, limit: int) -> None:
        #: Most entries held at once (``Config.outbox_limit``).
        self.limit = limit
        self._waiting: deque[Entry] = deque()
        self._held: dict[Entry, None] = {}
        self._suspects = 0

    @property
    def held(self) -> int:
        """Accepted and not settled: waiting here, in flight, or being reported."""
        return len(self._held)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def isolating(self) -> bool:
        """Suspects are held: each goes out alone, and nothing else goes out before them."""
        return self._suspects > 0

    def has_room(self, count: int) -> bool:
        """Room for ``count`` more; a batch larger than the limit gets in only when nothing else is held."""
        return not self._held or len(self._held) + count <= self.limit

    def admit(self, entries: Iterable[Entry]) -> None:
        self._held.update(dict.fromkeys(entries))

    def park(self, entries: Iterable[Entry]) -> None:
        self._waiting.extend(entries)

    def push_front(self, entries: list[Entry]) -> None:
        """Put entries back ahead of everything, keeping their order (they were sent first)."""
        self._waiting.extendleft(reversed(entries))

    def suspect(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            if not entry.suspect and entry in self._held:
                entry.suspect = True
                self._suspects += 1

    def next_batch(self, limit: int, max_bytes: int, in_flight: bool) -> list[Entry]:
        """What the flusher sends next: a suspect alone once nothing is in flight, or up to ``limit``
        entries and about ``max_bytes`` (so a broker that stops reading, under an alarm, does not leave a
        long write hanging on a full socket)."""
        if self.isolating:
            if in_flight or not self._waiting or not self._waiting[0].suspect:
                return []
            return [self._waiting.popleft()]
        batch: list[Entry] = []
        size = 0
        while self._waiting and len(batch) < limit and size < max_bytes:
            entry = self._waiting.popleft()
            batch.append(entry)
            size += len(entry.body)
        return batch

    def take_all(self) -> list[Entry]:
        """Every waiting entry (they stay held until reported)."""
        taken = list(self._waiting)
        self._waiting.clear()
        return taken

    def release(self, entries: Iterable[Entry]) -> list[Entry]:
        """Forget settled entries; returns those that were still held (each is settled exactly once)."""
        released = []
        for entry in entries:
            if entry in self._held:
                del self._held[entry]
                self._suspects -= entry.suspect
                released.append(entry)
        return released

    def release_all(self) -> list[Entry]:
        """Forget everything (the publisher is closed); returns what was held."""
        released = list(self._held)
        self._held.clear()
        self._waiting.clear()
        self._suspects = 0
        return released

    def task_ids(self) -> list[str]:
        return [entry.message.task_id for entry in self._held]


class Reports:
    """What became of held entries, queued under the state lock by whichever thread learns it, and told
    to the listener by ``deliver`` with no lock held; only then are the entries released and their
    receipts settled, so a settled receipt means the record was already written."""

    def __init__(self, lock: threading.Condition, outbox: Outbox) -> None:
        self._lock = lock
        self._outbox = outbox
        self._queued: list[tuple[Entry, str | None]] = []
        self.listener: PublishListener | None = None

    def add(self, entries: Iterable[Entry], failure: str | None) -> None:
        """State lock held."""
        self._queued.extend((entry, failure) for entry in entries)

    def deliver(self) -> None:
        with self._lock:
            reports, self._queued = self._queued, []
        if not reports:
            return
        deliver(self.listener, reports)
        with self._lock:
            released = set(self._outbox.release(entry for entry, _ in reports))
            self._lock.notify_all()
        settle(report for report in reports if report[0] in released)

    def refuse(self, entries: list[Entry], reason: str) -> None:
        """Report entries the outbox never held (refused before they were accepted)."""
        reports: list[tuple[Entry, str | None]] = [(entry, reason) for entry in entries]
        deliver(self.listener, reports)
        settle(reports)


def deliver(listener: PublishListener | None, reports: list[tuple[Entry, str | None]]) -> None:
    """Tell the listener what became of messages (``failure`` None = confirmed).

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


def settle(reports: Iterable[tuple[Entry, str | None]]) -> None:
    """Settle the receipts of reported entries, one call per receipt and outcome."""
    counts: dict[tuple[Receipt, str | None], int] = {}
    for entry, failure in reports:
        key = (entry.receipt, failure)
        counts[key] = counts.get(key, 0) + 1
    for (receipt, failure), count in counts.items():
        receipt.settle(count, failure)
