"""The app of the quorum ladder test: the cluster app (cluster_app.py) plus a task that fails a given
number of times and then succeeds, each retry waiting on the delay ladder.

Each run appends ``"<attempt>:<task id>"`` to a Redis list named after the chain's original task, from the
body itself: the test counts runs and walks the retry chain from what actually ran, not from cogman's
own bookkeeping. The backoff is a constant 3 s, so every retry takes the same path through the ladder
(level 1, then a dead-letter into the queue of level 0, then the delivery exchange): a retry whose
``x-death`` carried the previous trips' entries would be dropped as a dead-letter cycle at its second
pass (tests/cluster/test_quorum_ladder.py shows RabbitMQ doing so).
"""

from __future__ import annotations

import os
from typing import Any

import redis

from cogman import App
from cogman.task import TaskContext
from tests.cluster.cluster_app import make_app

FLAKY = "cluster.flaky"
#: The retry budget, and how many runs fail in the test: exactly ``RETRIES + 1`` runs, the last a success.
RETRIES = 5
#: Seconds: bits 0 and 1 set, so each retry waits in ``cogman.delay.1`` and then in ``cogman.delay.0``.
BACKOFF = 3.0


def runs_key(prefix: str, original_task_id: str) -> str:
    return f"{prefix}:ladder-runs:{original_task_id}"


def make_ladder_app(broker: str | None = None, backend: str | None = None, prefix: str | None = None) -> App:
    prefix = prefix or os.environ.get("COGMAN_TEST_PREFIX", "cogman-cluster")
    application = make_app(broker, backend, prefix)
    runs = redis.Redis.from_url(backend or os.environ["COGMAN_BACKEND_URL"])

    @application.task(name=FLAKY, retry=RETRIES, retry_backoff=BACKOFF, bind=True)
    def flaky(context: TaskContext, failures: int) -> int:
        run = int(runs.rpush(runs_key(prefix, context.original_task_id), f"{context.attempt}:{context.task_id}"))
        if run <= failures:
            raise ConnectionError(f"run {run} of the {failures} that fail")
        return run

    return application


def __getattr__(name: str) -> Any:
    """The worker's app, ``cogman -A tests.cluster.ladder_app:app worker``, made on first use (the test
    process imports ``make_ladder_app`` without the worker's environment)."""
    if name != "app":
        raise AttributeError(name)
    application = make_ladder_app()
    globals()["app"] = application
    return application
