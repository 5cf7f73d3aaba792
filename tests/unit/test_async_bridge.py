"""The app's thread pool for the asyncio client (cogman/aio/bridge.py), without any server."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from cogman.aio.bridge import AsyncBridge


def test_a_call_failing_after_its_coroutine_was_cancelled_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    bridge = AsyncBridge(1)
    started, go = threading.Event(), threading.Event()

    def failing() -> None:
        started.set()
        assert go.wait(30)
        raise RuntimeError("late failure")

    async def main() -> list[threading.Thread]:
        call = asyncio.ensure_future(bridge.run(failing))
        assert await asyncio.to_thread(started.wait, 30)
        threads = bridge.threads
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert bridge.busy == 1  # still running in its thread
        go.set()
        await bridge.aclose()  # waits for it
        assert bridge.busy == 0
        return threads

    with caplog.at_level(logging.ERROR, logger="cogman.aio"):
        for thread in asyncio.run(main()):
            thread.join(30)
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] and "late failure" in caplog.text


def test_an_exception_reaches_the_awaiting_coroutine_unchanged() -> None:
    bridge = AsyncBridge(2)

    def broken() -> None:
        raise KeyError("which")

    async def main() -> None:
        with pytest.raises(KeyError, match="which"):
            await bridge.run(broken)
        assert await bridge.run(lambda: threading.current_thread().name.startswith("cogman-aio"))
        await bridge.aclose()

    asyncio.run(main())


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="max_workers=0"):
        AsyncBridge(0)
