"""The app of the Redis Cluster end-to-end test (tests/cluster/test_redis_cluster_e2e.py).

Broker and backend (a ``redis+cluster://`` URL) come from ``COGMAN_*`` variables; ``COGMAN_TEST_PREFIX``
isolates one run's keys. Tasks count their runs in the hash ``<prefix>:runs:<name>`` of
``COGMAN_TEST_COUNT_URL`` (the suite's own Redis). ``rc.tick`` runs every second from the worker's beat.
"""

from __future__ import annotations

import os
from datetime import timedelta

import redis

from cogman import App, TaskContext

PREFIX = os.environ.get("COGMAN_TEST_PREFIX", "cogman")
app = App("rcluster", redis_prefix=PREFIX)
_counts = redis.Redis.from_url(os.environ.get("COGMAN_TEST_COUNT_URL", "redis://127.0.0.1:6379/15"))


def count_run(name: str, key: str) -> None:
    _counts.hincrby(f"{PREFIX}:runs:{name}", key, 1)


@app.task(name="rc.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="rc.flaky", bind=True, retry=3)
def flaky(ctx: TaskContext, key: str) -> int:
    """Fails its first two attempts, then returns the attempt that succeeded."""
    count_run("flaky", key)
    if ctx.attempt < 3:
        raise ValueError(f"attempt {ctx.attempt} of {key} fails")
    return ctx.attempt


@app.task(name="rc.total", bind=True)
def total(ctx: TaskContext, values: list[int | None]) -> int:
    count_run("total", ctx.task_id)
    return sum(v for v in values if v is not None)


@app.task(name="rc.tick", bind=True)
def tick(ctx: TaskContext) -> str:
    count_run("tick", ctx.task_id)
    return ctx.task_id


app.add_periodic(tick, every=timedelta(seconds=1), name="rc-every-second")
