"""The soak's app (``bench/soak.py``): one task that counts its own runs.

The count goes to Redis directly, not through the soak's proxies, so a run is counted even while
cogman's own connections are cut: the soak checks cogman's delivery, not the body's writes. The
broker and backend URLs come from the environment, which the soak points at its proxies.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from cogman import App

VHOST = "cogman_soak"
#: A database of its own: the soak empties it before each run.
DIRECT_REDIS_URL = "redis://127.0.0.1:6379/13"
RUNS_KEY = "soak:runs"
RUNNERS_KEY = "soak:runners"
TASK_NAME = "soak.mark"

_runs = redis.Redis.from_url(DIRECT_REDIS_URL)


def mark(serial: int) -> int:
    """Counts the run, and names the process that made it (a second run is explained by a killed one)."""
    pipe = _runs.pipeline(transaction=False)
    pipe.hincrby(RUNS_KEY, str(serial), 1)
    pipe.rpush(f"{RUNNERS_KEY}:{serial}", os.getpid())
    pipe.execute()
    return serial


def make_app(broker: str, backend: str, **options: Any) -> App:
    app = App(
        "soak",
        broker=broker,
        backend=backend,
        high_priority_queue_count=2,
        # Short, so that what a cut left unconfirmed is republished within the soak's settle time
        re_enqueue_grace=10.0,
        re_enqueue_interval=2.0,
        **options,
    )
    app.task(name=TASK_NAME)(mark)
    return app


#: The workers' app (``cogman -A bench.soak_tasks:app worker``), pointed at the soak's proxies.
app = make_app(
    os.environ.get("SOAK_BROKER_URL", f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"),
    os.environ.get("SOAK_BACKEND_URL", DIRECT_REDIS_URL),
)
