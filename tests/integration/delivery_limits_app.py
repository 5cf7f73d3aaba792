"""The app of tests/integration/test_delivery_limits.py: tasks that kill their own worker process.

Broker and backend come from ``COGMAN_BROKER_URL`` / ``COGMAN_BACKEND_URL``, the queue type and
``max_redeliveries`` from ``COGMAN_QUEUE_TYPE`` / ``COGMAN_MAX_REDELIVERIES`` (the client of the test
uses the same, or a quorum queue's ``x-delivery-limit`` would not match). ``COGMAN_TEST_PREFIX``
isolates the Redis keys of one test. Every run appends a line to ``COGMAN_TEST_RUN_LOG`` before it
kills its process, so the test counts the runs that left no outcome.
"""

from __future__ import annotations

import os
import signal

from cogman import App

app = App("delivery-limits", redis_prefix=os.environ.get("COGMAN_TEST_PREFIX", "cogman"))
RUN_LOG = os.environ.get("COGMAN_TEST_RUN_LOG", "")


def runs_so_far() -> int:
    """Runs logged before this one (the log is the only memory that survives a SIGKILL)."""
    try:
        with open(RUN_LOG, encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    except FileNotFoundError:
        return 0


def log_run() -> None:
    descriptor = os.open(RUN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"{os.getpid()}\n".encode())
    finally:
        os.close(descriptor)


@app.task(name="limits.kills_worker")
def kills_worker() -> None:
    """What an OOM kill looks like from the broker: the process vanishes mid-run, nothing is acked."""
    log_run()
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="limits.kills_worker_once")
def kills_worker_once() -> str:
    first = runs_so_far() == 0
    log_run()
    if first:
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@app.task(name="limits.go_kills_worker", wire="go")
def go_kills_worker(payload: bytes) -> None:
    """The same, for a Go-format task (issue 22): its starts are counted beside Go's record."""
    log_run()
    os.kill(os.getpid(), signal.SIGKILL)
