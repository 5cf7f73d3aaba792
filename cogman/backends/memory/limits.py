"""Rate limits and concurrency slots in process: the memory backend's ``limits()``, the reference the
Redis and MongoDB stores are tested against (tests/integration/test_limits_contract.py).

One lock guards everything, so each call is one atomic step as a Lua script is on Redis. Memory is
bounded by what is live: a scope's log holds at most ``rate.count`` starts of the last window (dropped
when the scope is next asked), expired leases and notes likewise, and a scope left with no slot is removed.
"""

from __future__ import annotations

import collections
import threading
import time
import weakref
from collections.abc import Callable, Sequence

from cogman.limits.policy import Rate


class MemoryLimits:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._starts: dict[str, collections.deque[tuple[float, str]]] = {}
        self._tokens: dict[str, set[str]] = {}
        self._slots: dict[str, dict[str, float]] = {}
        self._notes: dict[str, tuple[str, float]] = {}

    def take_start(self, scope: str, rate: Rate, token: str) -> float:
        with self._lock:
            now = self.clock()
            starts = self._starts.setdefault(scope, collections.deque())
            tokens = self._tokens.setdefault(scope, set())
            while starts and (starts[0][0] <= now - rate.period or len(starts) > rate.count):
                tokens.discard(starts.popleft()[1])  # past the window, or the limit was lowered
            if token in tokens:
                return 0.0
            if len(starts) >= rate.count:
                return max(starts[len(starts) - rate.count][0] + rate.period - now, 1e-6)
            starts.append((now, token))
            tokens.add(token)
            return 0.0

    def acquire_slot(self, scope: str, holder: str, limit: int, lease: float) -> bool:
        with self._lock:
            now = self.clock()
            holders = self._live(scope, now)
            if holder not in holders and len(holders) >= limit:
                return False
            holders[holder] = now + lease
            self._slots[scope] = holders
            return True

    def renew_slots(self, held: Sequence[tuple[str, str]], lease: float) -> list[tuple[str, str]]:
        lost = []
        with self._lock:
            now = self.clock()
            for scope, holder in held:
                holders = self._live(scope, now)
                if holder in holders:
                    holders[holder] = now + lease
                else:
                    lost.append((scope, holder))
        return lost

    def release_slot(self, scope: str, holder: str) -> None:
        with self._lock:
            holders = self._slots.get(scope)
            if holders is not None:
                holders.pop(holder, None)
                if not holders:
                    del self._slots[scope]

    def note_waiting(self, task_id: str, reason: str, ttl: float) -> None:
        with self._lock:
            now = self.clock()
            for stale in [key for key, (_, until) in self._notes.items() if until <= now][:100]:
                del self._notes[stale]
            self._notes[task_id] = (reason, now + ttl)

    def waiting(self, task_id: str) -> str | None:
        with self._lock:
            note = self._notes.get(task_id)
            return None if note is None or note[1] <= self.clock() else note[0]

    def _live(self, scope: str, now: float) -> dict[str, float]:
        holders = {holder: until for holder, until in self._slots.get(scope, {}).items() if until > now}
        if holders:
            self._slots[scope] = holders
        else:
            self._slots.pop(scope, None)
        return holders


_stores: weakref.WeakKeyDictionary[object, MemoryLimits] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()


def limits_of(backend: object) -> MemoryLimits:
    """The one store of this memory backend (made on first use)."""
    with _stores_lock:
        store = _stores.get(backend)
        if store is None:
            store = _stores[backend] = MemoryLimits()
        return store
