"""Calling a task's handler: sync on the handler thread, async on the worker's one event-loop thread.

Whatever a handler raises, including ``SystemExit``, ``KeyboardInterrupt`` or ``GeneratorExit``, comes
back to the caller as an exception of that attempt: it fails the attempt, and the handler thread (or the
event loop, for async handlers) lives on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cogman.errors import ResultRejected
from cogman.task import TaskContext
from cogman.worker import limits

if TYPE_CHECKING:
    from cogman.backends.base import Started
    from cogman.message import Message
    from cogman.task import Task
    from cogman.worker.cancelling import Running

log = logging.getLogger("cogman.worker")


@dataclass(frozen=True, slots=True)
class Chain:
    """Where an attempt stands in its retry chain, as the backend says (what ``TaskContext`` shows)."""

    original_task_id: str
    attempt: int
    retries_left: int


def chain_of(message: Message, started: Started | None) -> Chain:
    if started is None:  # no record (a foreign producer) or the backend is away: nothing to trust yet
        return Chain(message.task_id, 1, 0)
    return Chain(started.original_task_id, started.attempt, started.retries_left)


class HandlerExit(Exception):
    """An async handler raised a BaseException (SystemExit...): carried out of the event loop as this,
    since letting it through would stop the loop for every other async task."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def run_handler(
    task: Task[Any, Any], message: Message, chain: Chain, loop: EventLoopThread | None, running: Running | None = None
) -> Any:
    """The handler's outcome; ``running`` (cancelling.py) makes the attempt interruptible by a cancel."""
    args: tuple[Any, ...] = message.args
    if task.bind:
        context = TaskContext(
            task_id=message.task_id,
            name=message.name,
            original_task_id=chain.original_task_id,
            attempt=chain.attempt,
            retries_left=chain.retries_left,
            primary_key=message.primary_key,
            cancel_event=None if running is None else running.event,
        )
        args = (context, *args)
    if task.time_limit is not None and not task.is_async:
        return limits.call(task.time_limit, task.fn, *args, **(message.kwargs or {}))
    outcome = task.fn(*args, **(message.kwargs or {}))
    if not task.is_async:
        return outcome
    if loop is None:
        raise RuntimeError(f"async task {task.name} needs the worker's event loop")
    if task.time_limit is not None:
        outcome = limits.bounded(outcome, task.time_limit)
    if running is not None:
        outcome = running.wrap(outcome)
    try:
        return loop.run(outcome)
    except HandlerExit as wrapped:
        raise wrapped.original from None


class _Unencodable(TypeError):
    """What the result encoder met: a value of a type JSON has no form for."""


def _refuse(value: Any) -> Any:
    raise _Unencodable(type(value).__name__)


#: Encodes a result as the backends store it (compact, ASCII), refusing NaN, infinities and other types.
_RESULT_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_refuse)


def check_result(task: Task[Any, Any], result: Any, limit: int) -> None:
    """Raise ResultRejected when the record cannot hold ``result``: checked here, once the handler
    returned, so the attempt fails without a retry instead of the backend write failing later."""
    try:
        size = len(_RESULT_ENCODER.encode(result))
    except _Unencodable as exc:
        what = str(exc)  # the offending value's type, wherever it is nested: "datetime", "set"
    except (TypeError, ValueError, RecursionError) as exc:  # a key of another type, NaN, a cycle, depth
        what = f"{type(exc).__name__}: {exc}"
    else:
        if size > limit:
            raise ResultRejected(f"result of {task.name} is {size} bytes of JSON, over max_result_size={limit}")
        return
    raise ResultRejected(f"result of {task.name} is not JSON-serialisable: {what}")


async def _guarded(coroutine: Coroutine[Any, Any, Any]) -> Any:
    try:
        return await coroutine
    except (Exception, asyncio.CancelledError):
        raise
    except BaseException as exc:
        raise HandlerExit(exc) from exc


class EventLoopThread:
    """One asyncio loop in its own thread; handler threads hand it coroutines and wait for them.

    The waiting handler thread keeps its slot, so async tasks count against ``concurrency`` like
    sync ones.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="cogman-asyncio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Top level of the loop's thread: ``stop()`` ends it; anything a callback raises (a background
        task's SystemExit) is logged and the loop runs on, or every later async task would wait forever."""
        while True:
            try:
                self.loop.run_forever()
                return
            except BaseException:
                log.critical("the worker's event loop raised; it runs on", exc_info=True)

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(_guarded(coroutine), self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
