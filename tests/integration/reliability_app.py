"""The app of the worker-process fault tests (tests/integration/test_worker_faults.py).

Broker and backend come from ``COGMAN_BROKER_URL`` / ``COGMAN_BACKEND_URL``; ``COGMAN_TEST_PREFIX``
isolates the Redis keys of one test; ``COGMAN_TEST_GRACE`` / ``COGMAN_TEST_INTERVAL`` set the re-enqueue
grace and sweep interval, ``COGMAN_TEST_STOP_GRACE`` the worker's grace period. Every run appends
``name index attempt pid`` to the file ``COGMAN_TEST_RUN_LOG`` before it works, so a run cut short by a
kill still counts.
"""

from __future__ import annotations

import os
import time

import redis

from cogman import App, TaskContext

PREFIX = os.environ.get("COGMAN_TEST_PREFIX", "cogman")
app = App(
    "reliability",
    redis_prefix=PREFIX,
    re_enqueue_grace=float(os.environ.get("COGMAN_TEST_GRACE", "60")),
    re_enqueue_interval=float(os.environ.get("COGMAN_TEST_INTERVAL", "30")),
    grace_period=float(os.environ.get("COGMAN_TEST_STOP_GRACE", "25")),
)
RUN_LOG = os.environ.get("COGMAN_TEST_RUN_LOG")


def log_run(name: str, index: int, attempt: int) -> None:
    if RUN_LOG:
        line = f"{name} {index} {attempt} {os.getpid()}\n".encode()
        descriptor = os.open(RUN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)


def wait_for_gate(index: int) -> None:
    """Block until the test opens the gate (a Redis key next to the records)."""
    gates = redis.Redis.from_url(os.environ["COGMAN_BACKEND_URL"])
    while not gates.exists(f"{PREFIX}:gate:{index}"):
        time.sleep(0.02)


@app.task(name="rel.fails_once", retry=1, bind=True)
def fails_once(ctx: TaskContext, index: int) -> int:
    log_run("fails_once", index, ctx.attempt)
    if ctx.attempt == 1:
        wait_for_gate(index)
        raise OSError(f"attempt 1 of {index} fails")
    return index * 10


@app.task(name="rel.blocks")
def blocks(index: int) -> int:
    log_run("blocks", index, 1)
    wait_for_gate(index)
    return index


def read_runs(path: str) -> list[tuple[str, int, int, int]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [(n, int(i), int(a), int(p)) for n, i, a, p in (line.split() for line in handle if line.strip())]
    except FileNotFoundError:
        return []
