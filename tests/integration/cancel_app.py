"""The app of tests/integration/test_cancel_fleet.py: tasks that leave marks in Redis, so the test reads
from the task bodies themselves whether they ran, started, stopped, or got past their loop.

Broker and backend come from ``COGMAN_BROKER_URL`` / ``COGMAN_BACKEND_URL``; ``COGMAN_TEST_PREFIX``
isolates the Redis keys (records and marks) of one test.
"""

from __future__ import annotations

import asyncio
import os
import time

import redis

from cogman import App

PREFIX = os.environ.get("COGMAN_TEST_PREFIX", "cogman")
app = App("cancel-fleet", redis_prefix=PREFIX)
#: Loop rounds of 10 ms: 60 s, far past any wait of the tests, so only a cancel ends the loop early.
LONG = 6000


def marks() -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("COGMAN_BACKEND_URL", "redis://127.0.0.1:6379/15"))


def mark(kind: str, key: str) -> str:
    return f"{PREFIX}:marks:{kind}:{key}"


@app.task(name="fleet.record_run")
def record_run(key: str) -> None:
    marks().incr(mark("runs", key))


@app.task(name="fleet.total")
def total(values: list[int], key: str) -> int:
    marks().incr(mark("runs", key))
    return sum(values)


@app.task(name="fleet.flaky", retry=5, retry_backoff=2)
def flaky(key: str) -> None:
    marks().incr(mark("runs", key))
    raise RuntimeError("down")


@app.task(name="fleet.slow")
def slow(key: str) -> int:
    store = marks()
    store.set(mark("started", key), os.getpid())
    try:
        for _ in range(LONG):
            time.sleep(0.01)
        store.set(mark("after", key), 1)
    finally:
        store.set(mark("stopped", key), 1)
    return 1


@app.task(name="fleet.slow_async")
async def slow_async(key: str) -> int:
    store = marks()
    store.set(mark("started", key), os.getpid())
    try:
        for _ in range(LONG):
            await asyncio.sleep(0.01)
        store.set(mark("after", key), 1)
    finally:
        store.set(mark("stopped", key), 1)
    return 1
