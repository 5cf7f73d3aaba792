"""Buffer-and-replay for backend writes while the store is unreachable.

A worker must keep running tasks when Redis or MongoDB goes away, and no status may be lost once the
store is back. Every write goes through :meth:`WriteBuffer.write`: it is tried with a short, bounded
tenacity retry; if the store is still unreachable the write is parked in an in-process FIFO and a
background thread replays it, in order, once the store answers again. While anything is parked, new
writes queue behind it without trying the store, so a write never overtakes an earlier one (a status
never reaches the store before the record it belongs to) and a handler thread blocks at most once per
outage, for ``retry_seconds``.

Reads and the retry-budget decrement cannot be deferred: :meth:`WriteBuffer.call` retries them the same
bounded way and then raises :class:`cogman.errors.BackendUnavailable`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from cogman.errors import BackendUnavailable

log = logging.getLogger("cogman.backends")

T = TypeVar("T")


class NotYet(Exception):
    """Raised by a replayed write whose record is not in the store yet (its ``create`` is still parked
    in another process). The write is kept aside and tried again for ``orphan_window`` seconds."""


@dataclass(slots=True)
class _Parked:
    op: Callable[[], object]
    what: str
    since: float


class WriteBuffer:
    """Bounded retries, then an ordered in-memory replay queue drained by one daemon thread."""

    def __init__(
        self,
        name: str,
        transient: tuple[type[BaseException], ...],
        *,
        retry_seconds: float = 2.0,
        max_pending: int = 100_000,
        orphan_window: float = 600.0,
    ) -> None:
        self.name = name
        self.transient = transient
        self.retry_seconds = retry_seconds
        self.max_pending = max_pending
        self.orphan_window = orphan_window
        self._pending: collections.deque[_Parked] = collections.deque()
        self._orphans: list[_Parked] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None
        self.dropped = 0

    # The two entry points

    def call(self, op: Callable[[], T], what: str) -> T:
        """Run ``op`` with bounded retries; raise BackendUnavailable naming ``what`` if the store stays away."""
        try:
            return self._retrying(op)
        except self.transient as exc:
            raise BackendUnavailable(f"{self.name} unreachable while trying to {what}: {exc}") from exc

    def write(self, op: Callable[[], T], what: str) -> T | None:
        """Run ``op`` now if nothing is parked and the store answers; otherwise park it for replay and
        return None. A ``NotYet`` from ``op`` on this direct path also gives None (unknown record)."""
        with self._lock:
            if self._pending:
                self._park(_Parked(op, what, time.monotonic()))
                log.debug("%s: parked behind earlier writes: %s", self.name, what)
                return None
        try:
            return self._retrying(op)
        except NotYet:
            return None
        except self.transient as exc:
            with self._lock:
                first = not self._pending
                self._park(_Parked(op, what, time.monotonic()))
            log.debug("%s: parked: %s", self.name, what)
            if first:
                log.warning(
                    "%s unreachable (%s); buffering writes in memory and replaying them when it is back "
                    "(first parked: %s)",
                    self.name,
                    exc,
                    what,
                )
            return None

    # State

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._orphans)

    def flush(self, timeout: float) -> bool:
        """Wait until everything parked has been replayed; False if some is still parked at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._orphans:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.notify_all()
                self._wake.wait(min(remaining, 0.05))
            return True

    def close(self, timeout: float = 5.0) -> None:
        """Try to replay what is parked for up to ``timeout``, then stop; log what is left behind."""
        if not self.flush(timeout):
            with self._lock:
                left = [p.what for p in (*self._pending, *self._orphans)]
            log.error(
                "%s: %d buffered write(s) could not be replayed before close and are lost: %s",
                self.name,
                len(left),
                "; ".join(left[:20]) + (" ..." if len(left) > 20 else ""),
            )
        with self._lock:
            self._closed = True
            self._pending.clear()
            self._orphans.clear()
            self._wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    # Internals

    def _retrying(self, op: Callable[[], T]) -> T:
        retrying = Retrying(
            stop=stop_after_delay(self.retry_seconds),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            retry=retry_if_exception_type(self.transient),
            reraise=True,
        )
        return retrying(op)

    def _park(self, parked: _Parked) -> None:
        """Caller holds the lock."""
        if len(self._pending) + len(self._orphans) >= self.max_pending:
            self.dropped += 1
            log.error("%s: write buffer full (%d); dropping: %s", self.name, self.max_pending, parked.what)
            return
        self._pending.append(parked)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._replay, name=f"cogman-replay-{self.name}", daemon=True)
            self._thread.start()
        self._wake.notify_all()

    def _replay(self) -> None:
        delay = 0.05
        replayed = 0
        while True:
            with self._lock:
                while not self._closed and not self._pending and not self._orphans:
                    self._wake.wait()
                if self._closed:
                    return
                head = self._pending[0] if self._pending else None
            if head is None:
                self._retry_orphans()
                with self._lock:
                    if self._orphans and not self._pending and not self._closed:
                        self._wake.wait(1.0)
                continue
            try:
                head.op()
            except self.transient as exc:
                if delay >= 1.0:
                    log.warning("%s still unreachable (%s); %d write(s) waiting", self.name, exc, self.pending)
                with self._lock:
                    self._wake.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            except NotYet:
                with self._lock:
                    self._orphans.append(head)
            except Exception:
                log.exception("%s: dropping a buffered write that failed for good: %s", self.name, head.what)
            with self._lock:
                if self._pending and self._pending[0] is head:
                    self._pending.popleft()
                replayed += 1
                drained = not self._pending
                self._wake.notify_all()
            delay = 0.05
            if drained:
                log.warning("%s is back; replayed %d buffered write(s)", self.name, replayed)
                replayed = 0

    def _retry_orphans(self) -> None:
        with self._lock:
            orphans, self._orphans = self._orphans, []
        kept: list[_Parked] = []
        again: tuple[type[BaseException], ...] = (NotYet, *self.transient)
        for parked in orphans:
            try:
                parked.op()
            except again:
                if time.monotonic() - parked.since < self.orphan_window:
                    kept.append(parked)
                else:
                    log.error(
                        "%s: record still unknown after %.0f s; dropping: %s",
                        self.name,
                        self.orphan_window,
                        parked.what,
                    )
            except Exception:
                log.exception("%s: dropping a buffered write that failed for good: %s", self.name, parked.what)
        with self._lock:
            self._orphans.extend(kept)
            self._wake.notify_all()
