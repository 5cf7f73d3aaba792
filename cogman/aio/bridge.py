"""AsyncBridge: the small bounded thread pool in which an app runs its synchronous sends and reads for
coroutines, so that no network call is made on the event loop's thread.

Why threads: kombu (and py-amqp under it) has no asyncio API, and every guarantee of a send (the record
written first, the publisher confirm, the offline outbox, the re-enqueue lease) lives in the synchronous
client. Running that same code in a pool thread gives a coroutine exactly those guarantees; the loop only
awaits the thread's future. The pool is bounded (``max_workers``), so a burst of coroutines queues sends
instead of opening a thread each; it starts on first use and ``app.aclose()`` waits for what it runs and
shuts it down. A send whose coroutine is cancelled is either not started (it never runs) or finishes in
its thread: a send is not torn in half.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

log = logging.getLogger("cogman.aio")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: Threads of an app's pool: enough to overlap sends with the backend's and the broker's round trips.
DEFAULT_THREADS = 8


class Waker(Protocol):
    """A backend's asyncio wake-up for one event loop (``RedisBackend.async_waker``): returns when the
    task may have finished, or after ``timeout`` seconds; the caller re-reads the record either way."""

    @property
    def backend(self) -> object: ...
    async def wait(self, task_id: str, timeout: float) -> None: ...
    async def aclose(self) -> None: ...


class AsyncBridge:
    """Runs blocking calls in a bounded pool of threads named ``cogman-aio``; ``busy`` counts the calls
    submitted and not finished (a cancelled coroutine's call included while its thread still runs it)."""

    def __init__(self, max_workers: int = DEFAULT_THREADS) -> None:
        if max_workers < 1:
            raise ValueError(f"an async bridge needs at least one thread, got max_workers={max_workers}")
        self.max_workers = max_workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._running: set[concurrent.futures.Future[Any]] = set()
        #: The backend's asyncio wake-up in each event loop using it (cogman/aio/waiting.py).
        self.wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Waker] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"<AsyncBridge threads={self.max_workers} busy={self.busy}>"

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    @property
    def threads(self) -> list[threading.Thread]:
        """The pool's live threads (none once shut down and drained)."""
        with self._lock:
            pool = self._pool
        return [t for t in getattr(pool, "_threads", ()) if t.is_alive()]

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a pool thread; its result or its exception. Cancelling the await cancels a call
        not started yet; one already running finishes in its thread, and an exception it then raises,
        which nobody awaits any more, is logged. The call runs in a copy of the caller's context (as
        ``asyncio.to_thread``), so a tracing span current in the coroutine is the parent of the send."""
        context = contextvars.copy_context()
        future = self._submit(lambda: context.run(fn))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(_log_orphan_failure)
            raise

    def _submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="cogman-aio")
            future = self._pool.submit(fn)
            self._running.add(future)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._running.discard(future)

    async def aclose(self, then: Callable[[], object] | None = None) -> None:
        """Wait for the calls in flight, run ``then`` (the app's ``close``: drains the outbox) in the
        pool, shut the pool down and close this loop's wake-up. The bridge starts again if used later."""
        with self._lock:
            pending = list(self._running)
        if pending:
            await asyncio.wait([asyncio.wrap_future(f) for f in pending])
        try:
            if then is not None:
                await self.run(then)
        finally:
            self.shutdown()
            waker = self.wakers.pop(asyncio.get_running_loop(), None)
            if waker is not None:
                await waker.aclose()

    def shutdown(self) -> None:
        """Stop taking calls; the pool's threads end once they finish what they run (no wait here)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def _log_orphan_failure(future: concurrent.futures.Future[Any]) -> None:
    """A call whose coroutine was cancelled while it ran, and that then raised: nobody else will say so.
    (A send's record then follows the sync send's rules: ``failed`` with the reason, or re-enqueued.)"""
    if not future.cancelled() and (error := future.exception()) is not None:
        log.error("a call of a cancelled coroutine failed in its thread", exc_info=error)


class HasBridge(Protocol):
    @property
    def aio(self) -> AsyncBridge: ...


H = TypeVar("H", bound=HasBridge)


def in_thread(method: Callable[Concatenate[H, P], R]) -> Callable[Concatenate[H, P], Coroutine[Any, Any, R]]:
    """The ``*_async`` twin of a sending method: the same parameters (mypy sees them), run in the owner's
    ``aio`` pool. ``send_task_async = in_thread(send_task)`` in a class body."""

    async def twin(self: H, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.aio.run(functools.partial(method, self, *args, **kwargs))

    twin.__name__ = twin.__qualname__ = f"{method.__name__}_async"
    twin.__doc__ = (
        f"``await``-able ``{method.__name__}``: the same parameters, result and guarantees, run in the app's "
        f"thread pool so the event loop goes on (docs/async.md).\n\n{method.__doc__ or ''}"
    )
    return twin


_shared: AsyncBridge | None = None
_shared_lock = threading.Lock()


def bridge_for(owner: object) -> AsyncBridge:
    """The app's bridge (``owner.aio``); a process-wide one for a handle made without an app."""
    global _shared
    bridge = getattr(owner, "aio", None)
    if isinstance(bridge, AsyncBridge):
        return bridge
    with _shared_lock:
        if _shared is None:
            _shared = AsyncBridge()
        return _shared
