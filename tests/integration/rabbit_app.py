"""The app the RabbitMQ fault tests run in worker processes: ``python -m cogman -A tests.integration.rabbit_app``.

Broker and backend come from ``COGMAN_BROKER_URL`` / ``COGMAN_BACKEND_URL``; ``COGMAN_TEST_PREFIX``
isolates the Redis keys of one test. Every run of ``faults.work`` appends ``index pid`` to the file
named by ``COGMAN_TEST_RUN_LOG`` *before* it works, so a run cut short by SIGKILL still counts as a run.
"""

from __future__ import annotations

import os
import time

from cogman import App

app = App("rabbit-faults", redis_prefix=os.environ.get("COGMAN_TEST_PREFIX", "cogman"))
RUN_LOG = os.environ.get("COGMAN_TEST_RUN_LOG")


@app.task(name="faults.work")
def work(index: int, seconds: float = 0.0) -> int:
    if RUN_LOG:
        line = f"{index} {os.getpid()}\n".encode()
        descriptor = os.open(RUN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)  # one small O_APPEND write: lines never interleave
        finally:
            os.close(descriptor)
    if seconds:
        time.sleep(seconds)
    return index


def read_runs(path: str) -> list[tuple[int, int]]:
    """``(index, pid)`` for every run logged so far."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [(int(a), int(b)) for a, b in (line.split() for line in handle if line.strip())]
    except FileNotFoundError:
        return []
