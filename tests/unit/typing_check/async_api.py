"""Checked by mypy (tests/unit/test_async_typing.py), never run: the asyncio client is typed like the
sync one. Each ``assert_type`` must hold, and each ``# type: ignore[...]`` must be needed (mypy's strict
mode reports an unused one), so a call the sync API rejects is rejected by its ``*_async`` twin too."""

from __future__ import annotations

from typing import Any, assert_type

from cogman import App, AsyncResult
from cogman.status import Status

app = App("typing")


@app.task
def add(a: int, b: int = 0) -> int:
    return a + b


async def uses() -> None:
    handle = await add.delay_async(1, b=2)
    assert_type(handle, AsyncResult[int])
    assert_type(await handle.get_async(timeout=5), int)
    assert_type(await handle.status_async(), Status)
    assert_type(await add.send_async(args=(1, 2), priority="low", countdown=3), AsyncResult[int])
    assert_type(await app.send_task_async("add", args=(1,), wait_confirmed=True), AsyncResult[Any])
    assert_type(await app.aclose(), None)

    await add.delay_async("one")  # type: ignore[arg-type]
    await add.delay_async(1, c=3)  # type: ignore[call-arg]
    await add.send_async(args=(1,), priorty="low")  # type: ignore[call-arg]
    await app.send_task_async("add", countdown="soon")  # type: ignore[arg-type]
    await app.send_task_async()  # type: ignore[call-arg]
    not_awaited: int = add.delay_async(1)  # type: ignore[assignment]
    del not_awaited
