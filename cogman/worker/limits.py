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
task's budget (and ``retry_for``) allows. What neither can stop, the hard limit of ``--processes`` does
(cogman/worker/hard_limits.py): the supervisor ends the worker process, told here when a limited handler ends.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from cogman.errors import TimeLimitExceeded

log = logging.getLogger("cogman.worker")

T = TypeVar("T")
#: Finished watches the watchdog may hold beyond twice the running ones before it drops them.
COMPACT_SLACK = 64


class _Interrupt(BaseException):
    """What the watchdog raises inside a handler thread; turned into TimeLimitExceeded on the way out."""


#: Called with the handler thread's id when a time-limited handler ends (a ``--processes`` child reports
#: it to its supervisor, which stops timing the task); None outside such a child.
_on_end: Callable[[int], None] | None = None


def report_ends_to(callback: Callable[[int], None] | None) -> None:
    """Have ``callback(handler thread id)`` called when a time-limited handler ends (None: stop)."""
    global _on_end
    _on_end = callback


def _ended(handler_thread: int) -> None:
    """Never raises: the handler's outcome matters more than the report. A lost report costs the
    supervisor one read at the hard limit, where it finds the outcome recorded and leaves the process."""
    callback = _on_end
    if callback is not None:
        try:
            callback(handler_thread)
        except Exception:
            log.exception("could not report the end of a time-limited handler")


def call(limit: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on this thread, interrupted once ``limit`` seconds have passed."""
    watch = _Watch(threading.get_ident(), time.monotonic() + limit)
    watchdog = _watchdog()
    watchdog.watch(watch)
    try:
        result = _interruptible(watch, limit, fn, args, kwargs)
    finally:  # finished: no interrupt can come any more
        watchdog.forget(watch)
        _ended(watch.thread_id)
    if watch.fired:  # it passed the limit, and swallowed the interrupt or returned just as it came
        raise TimeLimitExceeded(limit)
    return result


def _interruptible(watch: _Watch, limit: float, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
    try:
        try:
            watch.arm()  # from here on the interrupt may come: only inside this try
            return fn(*args, **kwargs)
        finally:
            watch.finish()
    except _Interrupt as interrupt:
        watch.finish()
        raise TimeLimitExceeded(limit) from interrupt


def bounded(coroutine: Coroutine[Any, Any, T], limit: float) -> Coroutine[Any, Any, T]:
    """``coroutine``, cancelled at its next await once ``limit`` seconds have passed. Called on the
    handler thread, whose id the end report names (the coroutine itself runs on the event loop's)."""
    return _bounded(coroutine, limit, threading.get_ident())


async def _bounded(coroutine: Coroutine[Any, Any, T], limit: float, handler_thread: int) -> T:
    try:
        async with asyncio.timeout(limit) as scope:
            return await coroutine
    except TimeoutError as exc:
        if scope.expired():
            raise TimeLimitExceeded(limit) from exc
        raise
    finally:
        _ended(handler_thread)


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
    """One thread per process that fires the watches whose deadline passed, earliest first.

    A finished watch cannot be taken out of the middle of the heap cheaply, so it stays until it reaches
    the top or until finished ones outnumber the running: then the heap is rebuilt from the running
    ones. Its size stays under ``2 * running + COMPACT_SLACK`` whatever runs beside a long task (one
    ``time_limit=3600`` task kept every later watch for an hour: +179 MiB over 500k short tasks)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._running = 0  # watched and not yet forgotten
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="cogman-time-limits", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        """Entries held, finished ones not yet dropped included."""
        with self._changed:
            return len(self._heap)

    def watch(self, watch: _Watch) -> None:
        with self._changed:
            heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
            self._running += 1
            self._changed.notify()

    def forget(self, watch: _Watch) -> None:
        """``watch`` is finished: drop finished entries once they outnumber the running ones (amortised
        O(1): a rebuild of n entries follows at least n / 2 forgets)."""
        with self._changed:
            self._running -= 1
            if len(self._heap) > 2 * self._running + COMPACT_SLACK:
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)

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
