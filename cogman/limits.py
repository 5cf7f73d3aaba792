"""Time limits: ``@app.task(time_limit=30)`` fails an attempt that runs longer, with a clear error.

What can be interrupted, and when:

* A sync handler runs on a handler thread; a watchdog thread raises an exception *in* it when the limit
  passes (``PyThreadState_SetAsyncExc``, as Dramatiq's TimeLimit does). Python delivers it at the next
  bytecode the thread runs, so a pure-Python loop stops at once, but a blocking call in C (``time.sleep``,
  a socket read, a lock wait, a long NumPy operation) runs to its end first; the attempt fails as soon
  as it returns. The exception derives from BaseException so ``except Exception`` in the handler does
  not swallow it; ``finally`` blocks and context managers run as usual. A handler that catches
  BaseException and carries on is still failed when it returns, since the limit passed.
* An async handler is cancelled at its next ``await`` (``asyncio.timeout``). Code that blocks the event
  loop without awaiting cannot be interrupted until it awaits, and a coroutine that swallows
  ``CancelledError`` runs on.

Either way the attempt fails with ``TimeLimitExceeded: time limit exceeded (30 s)`` and is retried if the
task's budget (and ``retry_for``) allows.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from cogman.errors import CogmanError

log = logging.getLogger("cogman.worker")

T = TypeVar("T")


class TimeLimitExceeded(CogmanError):
    """An attempt ran longer than its task's ``time_limit``."""

    def __init__(self, limit: float) -> None:
        super().__init__(f"time limit exceeded ({limit:g} s)")
        self.limit = limit


class _Interrupt(BaseException):
    """What the watchdog raises inside a handler thread; turned into TimeLimitExceeded on the way out."""


def check_time_limit(task_name: str, value: Any) -> float | None:
    """A task's ``time_limit``: None, or seconds > 0. Raises TypeError/ValueError naming the task."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"task {task_name!r}: time_limit must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"task {task_name!r}: time_limit must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def call(limit: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on this thread, interrupted once ``limit`` seconds have passed."""
    watch = _Watch(threading.get_ident(), time.monotonic() + limit)
    _watchdog().watch(watch)
    try:
        try:
            watch.arm()  # from here on the interrupt may come: only inside this try
            result = fn(*args, **kwargs)
        finally:
            watch.finish()
    except _Interrupt as interrupt:
        watch.finish()
        raise TimeLimitExceeded(limit) from interrupt
    if watch.fired:  # it passed the limit, and swallowed the interrupt or returned just as it came
        raise TimeLimitExceeded(limit)
    return result


async def bounded(coroutine: Coroutine[Any, Any, T], limit: float) -> T:
    """Await ``coroutine``, cancelled at its next await once ``limit`` seconds have passed."""
    try:
        async with asyncio.timeout(limit) as scope:
            return await coroutine
    except TimeoutError as exc:
        if scope.expired():
            raise TimeLimitExceeded(limit) from exc
        raise


class _Watch:
    """One running call: the watchdog fires it at most once, only between ``arm`` and ``finish`` (a
    deadline that passes before ``arm`` makes ``arm`` raise), so the interrupt never lands in cogman's
    own bookkeeping outside the guarded block."""

    __slots__ = ("armed", "deadline", "due", "finished", "fired", "lock", "thread_id")

    def __init__(self, thread_id: int, deadline: float) -> None:
        self.thread_id = thread_id
        self.deadline = deadline
        self.lock = threading.Lock()
        self.armed = self.due = self.fired = self.finished = False

    def arm(self) -> None:
        with self.lock:
            self.armed = True
            if self.due:
                self.fired = True
                raise _Interrupt

    def fire(self) -> None:
        with self.lock:
            if self.finished or self.fired:
                return
            if not self.armed:
                self.due = True
                return
            self.fired = True
            _set_async_exc(self.thread_id, _Interrupt)

    def finish(self) -> None:
        """Called by the handler thread itself; clears an interrupt still pending, so none can be raised
        once the call is over (outside the code it was meant for)."""
        with self.lock:
            if self.finished:
                return
            self.finished = True
            if self.fired:
                _set_async_exc(self.thread_id, None)


class Watchdog:
    """One thread per process that fires the watches whose deadline passed, earliest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="cogman-time-limits", daemon=True)
        self._thread.start()

    def watch(self, watch: _Watch) -> None:
        with self._changed:
            heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
            self._changed.notify()

    def _run(self) -> None:
        while True:
            try:
                self._fire_due()
            except BaseException:
                log.exception("the time-limit watchdog failed; it carries on")
                time.sleep(0.1)

    def _fire_due(self) -> None:
        with self._changed:
            while self._heap and self._heap[0][2].finished:
                heapq.heappop(self._heap)
            if not self._heap:
                self._changed.wait()
                return
            remaining = self._heap[0][0] - time.monotonic()
            if remaining > 0:
                self._changed.wait(remaining)
                return
            _, _, watch = heapq.heappop(self._heap)
        watch.fire()


_instance: Watchdog | None = None
_instance_lock = threading.Lock()


def _watchdog() -> Watchdog:
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = Watchdog()
    return _instance


def _set_async_exc(thread_id: int, exception: type[BaseException] | None) -> None:
    """Raise ``exception`` in the thread at its next bytecode (None: clear a pending one)."""
    target = ctypes.py_object(exception) if exception is not None else None
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), target)
    if changed > 1:  # cannot happen for one thread id; undo rather than leave a stray exception
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        raise SystemError(f"PyThreadState_SetAsyncExc reached {changed} threads")
