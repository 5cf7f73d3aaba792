"""Interrupting attempts that were cancelled while they run (issue 23, docs/control.md).

The worker learns of a cancel from the backend, never from a broadcast, so it works whatever happened
to any message and also for a worker started after the cancel: one thread per worker asks the backend,
about once a second and only while attempts run, which of the ids it runs are ``cancelled``
(:meth:`Backend.cancelled_among`: one round trip per poll, not one per task). For each one found:

* ``ctx.cancelled`` (``bind=True``) turns True, for loops that check it;
* a sync handler gets an exception raised *in* its thread, as a time limit does (cogman/worker/limits.py:
  Python code stops at its next bytecode, a blocking call in C first returns); it derives from
  BaseException so ``except Exception`` does not swallow it, and it is raised only while the handler
  runs, never in the worker's bookkeeping around it;
* an async handler's task is cancelled at its next ``await``.

The attempt then ends with :class:`AttemptCancelled`, whatever the handler did with the interrupt (a
handler that swallowed it and returned has its result dropped): the executor records no failure, spawns
no retry (the backend would refuse it anyway), and acks. The record says ``cancelled`` already: the
cancel wrote it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cogman.brokers.base import OneShot
from cogman.worker.limits import _set_async_exc

if TYPE_CHECKING:
    from cogman.backends.base import Backend

log = logging.getLogger("cogman.worker")

T = TypeVar("T")
#: Seconds between two polls while attempts run: a running attempt stops within about this, plus the
#: round trip, plus whatever blocking call in C it is in.
POLL_INTERVAL = 1.0
#: Seconds the poll thread waits with nothing running before it ends (the next attempt starts another),
#: so a process that made many workers keeps no idle thread per worker.
IDLE_EXIT = 30.0


class AttemptCancelled(Exception):
    """The attempt was cancelled while it ran (what the executor sees instead of the handler's outcome)."""


class _Interrupt(BaseException):
    """Raised inside a sync handler's thread by the poll; turned into AttemptCancelled on the way out."""


class Running:
    """One running attempt: the poll fires it at most once, and only between ``arm`` and ``finish``
    (limits.py's ``_Watch`` protocol), so the interrupt never lands outside the handler."""

    __slots__ = ("armed", "event", "finished", "fired", "is_async", "lock", "loop", "task", "thread_id")

    def __init__(self, thread_id: int, is_async: bool, lock: threading.Lock) -> None:
        self.thread_id = thread_id
        self.is_async = is_async
        #: Set once the attempt is cancelled: ``TaskContext.cancelled``. A OneShot, not an Event: one is
        #: made for every attempt and almost none is ever set (docs/performance.md).
        self.event = OneShot()
        #: The watch's one lock, shared by its attempts: each holds it only to read or flip its flags.
        self.lock = lock
        self.armed = self.fired = self.finished = False
        self.task: asyncio.Task[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def arm(self) -> None:
        """Called by the handler thread just before the handler; raises if the cancel came already."""
        with self.lock:
            self.armed = True
            if self.event.is_set() and not self.is_async:
                self.fired = True
                raise _Interrupt

    def fire(self) -> None:
        """Before ``arm`` it only sets the event (``arm`` then raises, inside the guarded block)."""
        with self.lock:
            self.event.set()
            if self.finished or self.fired:
                return
            if not self.is_async and self.armed:
                self.fired = True
                _set_async_exc(self.thread_id, _Interrupt)
            elif self.task is not None and self.loop is not None:
                self.fired = True
                self.loop.call_soon_threadsafe(self.task.cancel)

    def finish(self) -> None:
        """Called by the handler thread; clears an interrupt still pending (sync handlers)."""
        with self.lock:
            if self.finished:
                return
            self.finished = True
            if self.fired and not self.is_async:
                _set_async_exc(self.thread_id, None)

    def wrap(self, coroutine: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
        """``coroutine`` as a task this attempt's cancel can cancel at its next await."""
        return self._cancellable(coroutine)

    async def _cancellable(self, coroutine: Coroutine[Any, Any, T]) -> T:
        with self.lock:
            self.task, self.loop = asyncio.current_task(), asyncio.get_running_loop()
            already = self.event.is_set()
            self.fired |= already
        if already:
            coroutine.close()
            raise AttemptCancelled("cancelled before it started")
        try:
            return await coroutine
        except asyncio.CancelledError:
            if self.fired:
                raise AttemptCancelled("cancelled while it ran") from None
            raise


class CancelWatch:
    """The attempts one worker runs, and the thread that polls the backend for their cancels."""

    def __init__(self, backend: Backend, interval: float = POLL_INTERVAL, idle_exit: float = IDLE_EXIT) -> None:
        self.backend = backend
        self.interval = interval
        self.idle_exit = idle_exit
        self._running: dict[str, Running] = {}
        self._changed = threading.Condition()
        self._flags = threading.Lock()
        self._thread: threading.Thread | None = None
        #: Polls made and polls that failed (the backend away): observable, for tests and docs/control.md.
        self.polls = 0
        self.poll_errors = 0

    def run(self, task_id: str, is_async: bool, call: Callable[[Running], T]) -> T:
        """``call(running)`` on this thread, watched for a cancel of ``task_id``; AttemptCancelled once
        it was cancelled, however the call ended."""
        running = Running(threading.get_ident(), is_async, self._flags)
        with self._changed:
            self._running[task_id] = running
            if len(self._running) == 1:  # the poll thread waits only while nothing runs
                self._start()
                self._changed.notify_all()
        try:
            try:
                try:
                    running.arm()
                    result = call(running)
                finally:
                    running.finish()
            except _Interrupt:
                running.finish()
                raise AttemptCancelled("cancelled while it ran") from None
        finally:
            with self._changed:
                self._running.pop(task_id, None)
        if running.cancelled:
            raise AttemptCancelled("cancelled while it ran; its result is dropped")
        return result

    def _start(self) -> None:
        """Lock held. The poll thread, started with the first attempt."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="cogman-cancel-poll", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        """Top level of the poll thread: whatever a poll raises, it lives on; it ends only when idle."""
        while True:
            try:
                if not self._poll_once():
                    return
            except BaseException:
                self.poll_errors += 1
                log.warning("could not read which running tasks are cancelled; trying again", exc_info=True)
                threading.Event().wait(self.interval)

    def _poll_once(self) -> bool:
        """One poll, once something runs; False when nothing ran for IDLE_EXIT (the thread then ends)."""
        with self._changed:
            if not self._running and not self._changed.wait_for(lambda: bool(self._running), self.idle_exit):
                self._thread = None
                return False
        threading.Event().wait(self.interval)
        with self._changed:
            ids: Sequence[str] = list(self._running)
        if not ids:
            return True
        self.polls += 1
        found = self.backend.cancelled_among(ids)
        for task_id in found:
            with self._changed:
                running = self._running.get(task_id)
            if running is not None:
                log.warning("task %s was cancelled while it ran; interrupting it", task_id)
                running.fire()
        return True
