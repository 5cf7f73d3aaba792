"""The app of the workflow and periodic tests run in worker and beat processes
(tests/integration/test_workflows.py, test_periodic.py).

Broker and backend come from ``COGMAN_BROKER_URL`` / ``COGMAN_BACKEND_URL``; ``COGMAN_TEST_PREFIX``
isolates the Redis keys of one test. Tasks count what they do in Redis beside the records, so a test
reads counts from several processes: ``<prefix>:runs:<name>`` per task name (a hash by key), and
``<prefix>:gate:<key>`` opens a member that waits.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import redis

from cogman import App, TaskContext

PREFIX = os.environ.get("COGMAN_TEST_PREFIX", "cogman")
app = App("workflows", redis_prefix=PREFIX, re_enqueue_grace=float(os.environ.get("COGMAN_TEST_GRACE", "60")))
_redis: redis.Redis | None = None


def store() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["COGMAN_BACKEND_URL"])
    return _redis


def count_run(name: str, key: str) -> None:
    store().hincrby(f"{PREFIX}:runs:{name}", key, 1)
    store().rpush(f"{PREFIX}:pids:{name}:{key}", os.getpid())


def wait_for_gate(key: str) -> None:
    while not store().exists(f"{PREFIX}:gate:{key}"):
        time.sleep(0.01)


@app.task(name="wf.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="wf.mul")
def mul(x: int, y: int) -> int:
    return x * y


@app.task(name="wf.fails", retry=1)
def fails(x: int) -> int:
    raise ValueError(f"cannot take {x}")


@app.task(name="wf.gated", bind=True)
def gated(ctx: TaskContext, gate: str, value: int) -> int:
    """Counts its run, then waits for its gate: members held until the test lets them all finish at once."""
    count_run("gated", f"{gate}:{value}")
    wait_for_gate(gate)
    return value


@app.task(name="wf.total", bind=True)
def total(ctx: TaskContext, values: list[int | None]) -> int:
    """A chord callback that counts its runs per task id: exactly once is what the tests check."""
    count_run("total", ctx.task_id)
    return sum(v for v in values if v is not None)


@app.task(name="wf.listed")
def listed(values: list[int | None]) -> list[int | None]:
    return values


@app.task(name="wf.tick", bind=True)
def tick(ctx: TaskContext) -> str:
    count_run("tick", ctx.task_id)
    return ctx.task_id


if os.environ.get("COGMAN_TEST_PERIODIC"):
    app.add_periodic(tick, every=timedelta(seconds=1), name="every-second")
    app.add_periodic(add, cron="0 9 * * *", tz="Europe/Paris", args=(1, 2), name="paris-morning")
