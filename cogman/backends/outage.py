"""Buffer-and-replay for backend writes while the store is unreachable, and the durability barrier.

A worker must keep running tasks when Redis or MongoDB goes away, and no status may be lost once the
store is back. Every write goes through :meth:`WriteBuffer.write`: it is tried with a short, bounded
tenacity retry; if the store is still unreachable the write is parked in an in-process FIFO and a
background thread replays it, in order, once the store answers again. While anything is parked, new
writes queue behind it without trying the store, so a write never overtakes an earlier one (a status
never reaches the store before the record it belongs to) and a handler thread blocks at most once per
outage, for ``retry_seconds``.

A parked write lives only in this process, so nothing that depends on it may be treated as done: the
worker acks a message only through :meth:`WriteBuffer.durable`, a barrier in the same FIFO that fires
once every write parked before it has reached the store. A worker killed meanwhile never acked, so the
broker redelivers. The FIFO is bounded (``max_pending``): a write into a full buffer raises
:class:`~cogman.errors.BackendUnavailable` instead of being dropped.

Reads and the retry-budget decrement cannot be deferred: :meth:`WriteBuffer.call` retries them the same
bounded way and then raises BackendUnavailable.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from cogman.errors import BackendUnavailable

log = logging.getLogger("cogman.backends")

T = TypeVar("T")

#: How long after the replay queue drains a new barrier still gets the reason of a write that failed.
FAILURE_MEMORY = 1.0
#: ``callback(failure)``: None once every earlier write is in the store, else why one failed for good.
DurableCallback = Callable[[str | None], None]


@dataclass(slots=True)
class _Parked:
    op: Callable[[], object]
    what: str


@dataclass(slots=True)
class _Barrier:
    callback: DurableCallback


class WriteBuffer:
    """Bounded retries, then an ordered in-memory replay queue drained by one daemon thread."""

    def __init__(
        self,
        name: str,
        is_transient: Callable[[BaseException], bool],
        *,
        retry_seconds: float = 2.0,
        max_pending: int = 100_000,
    ) -> None:
        self.name = name
        self.is_transient = is_transient
        self.retry_seconds = retry_seconds
        self.max_pending = max_pending
        self._queue: collections.deque[_Parked | _Barrier] = collections.deque()
        self._parked = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Why a replayed write failed for good. Every barrier queued behind it gets the reason, and so
        #: does one that arrives within FAILURE_MEMORY seconds of the queue draining (its owner's write may
        #: have been replayed between the write and the barrier): reporting a failure to a barrier that
        #: did not own the write only costs a redelivery; missing its owner would ack an unrecorded outcome.
        self._failure: str | None = None
        self._failure_until = 0.0

    # The entry points

    def call(self, op: Callable[[], T], what: str) -> T:
        """Run ``op`` with bounded retries; raise BackendUnavailable naming ``what`` if the store stays away."""
        try:
            return self._retrying(op)
        except Exception as exc:
            if self.is_transient(exc):
                raise BackendUnavailable(f"{self.name} unreachable while trying to {what}: {exc}") from exc
            raise

    def write(self, op: Callable[[], T], what: str) -> T | None:
        """Run ``op`` now if nothing is parked and the store answers; otherwise park it for replay and
        return None. Raises BackendUnavailable when the buffer is full (nothing is ever dropped)."""
        with self._lock:
            if self._parked:
                self._park(_Parked(op, what))
                log.debug("%s: parked behind earlier writes: %s", self.name, what)
                return None
        try:
            return self._retrying(op)
        except Exception as exc:
            if not self.is_transient(exc):
                raise
            self.park(op, what, exc)
            return None

    def park(self, op: Callable[[], object], what: str, cause: BaseException | None = None) -> None:
        """Queue ``op`` for replay without trying it now (the caller just found the store away)."""
        with self._lock:
            first = not self._parked
            self._park(_Parked(op, what))
        if first:
            why = f" ({cause})" if cause is not None else ""
            log.warning("%s unreachable%s; buffering writes in memory and replaying them when it is back "
                        "(first parked: %s)", self.name, why, what)  # fmt: skip

    def durable(self, callback: DurableCallback) -> None:
        """``callback(None)`` once every write made before this call is in the store (at once when
        nothing is parked), or ``callback(reason)`` if one of them failed for good. Runs on the caller's
        thread or the replay thread; it must be quick."""
        with self._lock:
            if self._queue:
                self._queue.append(_Barrier(callback))
                self._wake.notify_all()
                return
            failure = self._failure if time.monotonic() < self._failure_until else None
        _fire(callback, failure, self.name)

    # State

    @property
    def pending(self) -> int:
        """Writes parked in memory, waiting for the store."""
        with self._lock:
            return self._parked

    def flush(self, timeout: float) -> bool:
        """Wait until everything parked has been replayed; False if some is still parked at ``timeout``."""
        with self._lock:
            return self._wake.wait_for(lambda: not self._queue, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Try to replay what is parked for up to ``timeout``, then stop; log what is left behind (the
        messages behind those writes were never acked: the broker redelivers them)."""
        if not self.flush(timeout):
            with self._lock:
                left = [p.what for p in self._queue if isinstance(p, _Parked)]
            log.error(
                "%s: %d buffered write(s) not replayed before close; their tasks were not acked and will be "
                "redelivered: %s",
                self.name,
                len(left),
                "; ".join(left[:20]) + (" ..." if len(left) > 20 else ""),
            )
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._parked = 0
            self._wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    # Internals

    def _retrying(self, op: Callable[[], T]) -> T:
        """``op`` once; only when the store is unreachable, again with backoff for ``retry_seconds`` (the
        common case costs no retry machinery)."""
        try:
            return op()
        except Exception as exc:
            if not self.is_transient(exc):
                raise
        retrying = Retrying(
            stop=stop_after_delay(self.retry_seconds),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            retry=retry_if_exception(self.is_transient),
            reraise=True,
        )
        return retrying(op)

    def _park(self, parked: _Parked) -> None:
        """Caller holds the lock."""
        if not self._queue and self._failure is not None and time.monotonic() >= self._failure_until:
            self._failure = None  # an earlier outage's failure: none of this one's barriers owns it
        if self._closed:
            raise BackendUnavailable(f"{self.name}: the backend was closed; cannot {parked.what}")
        if self._parked >= self.max_pending:
            raise BackendUnavailable(
                f"{self.name} unreachable and {self.max_pending} writes already buffered; cannot {parked.what}"
            )
        self._queue.append(parked)
        self._parked += 1
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._replay, name=f"cogman-replay-{self.name}", daemon=True)
            self._thread.start()
        self._wake.notify_all()

    def _replay(self) -> None:
        """The replay thread: never dies quietly; anything unexpected is logged and the loop goes on."""
        delay = 0.05
        replayed = 0
        while True:
            try:
                with self._lock:
                    self._wake.wait_for(lambda: self._closed or bool(self._queue))
                    if self._closed:
                        return
                    head = self._queue[0]
                    if isinstance(head, _Barrier):
                        self._queue.popleft()
                        failure = self._failure
                        self._note_drained()
                        self._wake.notify_all()
                if isinstance(head, _Barrier):
                    _fire(head.callback, failure, self.name)
                    continue
                outcome = self._apply(head)
                if outcome == "retry":
                    if delay >= 1.0:
                        log.warning("%s still unreachable; %d write(s) waiting", self.name, self.pending)
                    with self._lock:  # new parked writes do not cut the backoff short; close does
                        self._wake.wait_for(lambda: self._closed, delay)
                    delay = min(delay * 2, 5.0)
                    continue
                with self._lock:
                    if self._queue and self._queue[0] is head:
                        self._queue.popleft()
                        self._parked -= 1
                    if outcome != "applied":
                        self._failure = outcome
                    self._note_drained()
                    replayed += 1
                    drained = not self._parked
                    self._wake.notify_all()
                delay = 0.05
                if drained:
                    log.warning("%s is back; replayed %d buffered write(s)", self.name, replayed)
                    replayed = 0
            except BaseException:
                log.exception("%s: the replay thread hit an unexpected error; it carries on", self.name)
                with self._lock:
                    self._wake.wait(1.0)

    def _note_drained(self) -> None:
        """Caller holds the lock: once the queue is empty, a failure is remembered for FAILURE_MEMORY."""
        if not self._queue and self._failure is not None:
            self._failure_until = time.monotonic() + FAILURE_MEMORY

    def _apply(self, parked: _Parked) -> str:
        """'applied', 'retry' (store still away), or the reason it failed for good."""
        try:
            parked.op()
        except Exception as exc:
            if self.is_transient(exc):
                return "retry"
            log.exception("%s: a buffered write failed for good: %s", self.name, parked.what)
            return f"{parked.what} failed: {type(exc).__name__}: {exc}"
        return "applied"


def _fire(callback: DurableCallback, failure: str | None, name: str) -> None:
    try:
        callback(failure)
    except BaseException:
        log.exception("%s: a durability callback failed", name)
