"""The app of the worker processes in tests/integration/test_delays_rabbitmq.py.

Broker and backend come from ``COGMAN_BROKER_URL`` / ``COGMAN_BACKEND_URL``; ``COGMAN_TEST_PREFIX``
isolates the Redis keys of one test. Every run counts itself in Redis (``<prefix>:runs:<index>``), so a
test can tell that a task ran once, and only in the worker that was up when it was due.
"""

from __future__ import annotations

import os

import redis

from cogman import App

PREFIX = os.environ.get("COGMAN_TEST_PREFIX", "cogman")
app = App("delays", redis_prefix=PREFIX)


@app.task(name="delays.stamp")
def stamp(index: int) -> int:
    runs = redis.Redis.from_url(os.environ["COGMAN_BACKEND_URL"])
    runs.incr(f"{PREFIX}:runs:{index}")
    return os.getpid()
