"""Waiting for a task to finish from a coroutine, without a thread blocked on the backend.

``AsyncResult.get_async`` reads the record through the app's pool (bridge.py) and, while it is not final,
waits here for a wake-up, then reads again, as ``get`` does with ``Backend.wait``:

- Redis: BLPOP on the task's wake-up list (``<prefix>:done:<id>``, pushed by the script that makes the
  record final) through ``redis.asyncio``, one client per event loop (``RedisBackend.async_waker``).
  Cancelling the coroutine drops the BLPOP's connection (redis-py does), so the server holds no waiter.
- memory: the backend calls back when the record turns final (``MemoryBackend.on_final``); an
  ``asyncio.Event`` is all that waits.
- anything else (MongoDB, which polls anyway; a Redis behind Sentinel): ``Backend.wait`` in the pool, in
  slices of ``SLICE`` seconds, so a cancelled coroutine leaves a thread busy for at most one slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING

from cogman.aio.bridge import AsyncBridge, Waker, bridge_for

if TYPE_CHECKING:
    from cogman.backends.base import Backend

__all__ = ["SLICE", "bridge_for", "until_final"]

#: Longest ``Backend.wait`` run in the pool for a backend with no asyncio wake-up.
SLICE = 0.25


async def until_final(bridge: AsyncBridge, backend: Backend, task_id: str, timeout: float) -> None:
    """Return once ``task_id``'s record may be final, or after ``timeout`` seconds; the caller re-reads."""
    from cogman.backends.memory import MemoryBackend

    primary: object = getattr(backend, "primary", backend)  # several backends: reads come from the first
    if isinstance(primary, MemoryBackend):
        await _memory(primary, task_id, timeout)
        return
    waker = await _waker(bridge, primary)
    if waker is not None:
        await waker.wait(task_id, timeout)
        return
    wait = getattr(primary, "wait", backend.wait)
    await bridge.run(functools.partial(wait, task_id, min(timeout, SLICE)))


async def _memory(backend: object, task_id: str, timeout: float) -> None:
    from cogman.backends.memory import MemoryBackend

    assert isinstance(backend, MemoryBackend)
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()

    def wake() -> None:  # the writing thread, backend lock held: hand over to the loop, never raise
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(finished.set)

    stop = backend.on_final(task_id, wake)
    try:
        async with asyncio.timeout(timeout):
            await finished.wait()
    except TimeoutError:
        pass
    finally:
        stop()


async def _waker(bridge: AsyncBridge, backend: object) -> Waker | None:
    """This loop's asyncio wake-up for ``backend``, made on first use; None if it offers none. A waker
    made for a backend the app has since replaced (``reconfigure``) is closed and replaced."""
    loop = asyncio.get_running_loop()
    current = bridge.wakers.get(loop)
    if current is not None and current.backend is backend:
        return current
    make = getattr(backend, "async_waker", None)
    fresh: Waker | None = make() if make is not None else None
    if fresh is None:
        return None
    bridge.wakers[loop] = fresh
    if current is not None:
        await current.aclose()
    return fresh
