"""The app of the RabbitMQ cluster fault tests: one task that counts its own runs in Redis.

Broker and backend come from ``COGMAN_BROKER_URL`` / ``COGMAN_BACKEND_URL`` (the node list of the test
cluster, the suite's Redis database); ``COGMAN_TEST_PREFIX`` keeps one test's records and counters apart.
The count is written by the body to Redis directly, so a run is counted whatever cogman records: the
test checks delivery, not cogman's own bookkeeping.
"""

from __future__ import annotations

import os
from typing import Any

import redis

from cogman import App

TASK_NAME = "cluster.mark"


def runs_key(prefix: str) -> str:
    """The hash of run counts, one field per task index, beside the test's records."""
    return f"{prefix}:runs"


def make_app(broker: str | None = None, backend: str | None = None, prefix: str | None = None, **options: Any) -> App:
    prefix = prefix or os.environ.get("COGMAN_TEST_PREFIX", "cogman-cluster")
    application = App(
        "cluster",
        broker=broker,
        backend=backend,
        queue_type="quorum",
        redis_prefix=prefix,
        # Long enough that a sweep does not republish what a node stop only delayed the confirm of
        re_enqueue_grace=30.0,
        re_enqueue_interval=5.0,
        **options,
    )
    runs = redis.Redis.from_url(backend or os.environ["COGMAN_BACKEND_URL"])

    @application.task(name=TASK_NAME)
    def mark(index: int) -> int:
        runs.hincrby(runs_key(prefix), str(index), 1)
        return index

    return application


def __getattr__(name: str) -> App:
    """The workers' app, ``cogman -A tests.cluster.cluster_app:app worker --processes 2``, made on first
    use: the test process imports ``make_app`` without the environment the workers get."""
    if name != "app":
        raise AttributeError(name)
    application = make_app()
    globals()["app"] = application
    return application
