"""The app of tests/integration/test_hard_time_limit.py, run by ``cogman worker --processes``.

Broker and backend come from ``COGMAN_BROKER_URL`` / ``COGMAN_BACKEND_URL``; ``COGMAN_TEST_PREFIX``
isolates the Redis keys of one test. Every run of ``hard.sleep`` appends ``pid`` to the file named by
``COGMAN_TEST_RUN_LOG`` before it sleeps, so a run its process was killed in still counts.
"""

from __future__ import annotations

import os
import time

from cogman import App

app = App("hard-limits", redis_prefix=os.environ.get("COGMAN_TEST_PREFIX", "cogman"), hard_time_limit_grace=1.0)
RUN_LOG = os.environ.get("COGMAN_TEST_RUN_LOG")


@app.task(name="hard.sleep", time_limit=1, retry=1)
def sleep(seconds: float) -> None:
    """A blocking call in C: the soft limit cannot interrupt it."""
    if RUN_LOG:
        descriptor = os.open(RUN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, f"{os.getpid()}\n".encode())  # one small O_APPEND write: lines never interleave
        finally:
            os.close(descriptor)
    time.sleep(seconds)


@app.task(name="hard.block_loop", time_limit=1)
async def block_loop(seconds: float) -> None:
    """Blocks the worker's event loop: ``asyncio.timeout`` cannot cancel what never awaits."""
    time.sleep(seconds)


@app.task(name="hard.pid", time_limit=30)
def pid() -> int:
    return os.getpid()


def read_runs(path: str) -> list[int]:
    """The pid of every run of ``hard.sleep`` so far."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [int(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []
