"""Where the benchmark runs and what it measures by default: one place, shared by every process.

Every system uses the same RabbitMQ vhost and the same Redis database, with its own queue names and its
own Redis keys, so leftovers of one never mix with another's. ``BENCH_AMQP_URL`` / ``BENCH_REDIS_URL``
override the defaults (the worker processes read the same variables).
"""

from __future__ import annotations

import os

VHOST = "cogman_bench"
AMQP_URL = os.environ.get("BENCH_AMQP_URL", f"amqp://guest:guest@127.0.0.1:5672/{VHOST}")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")

#: Defaults of a full run, and of ``--quick`` (a smoke run: numbers too noisy to quote).
TASKS, ROUNDS, LATENCY_SAMPLES = 20_000, 3, 1_000
QUICK_TASKS, QUICK_ROUNDS, QUICK_LATENCY_SAMPLES = 1_000, 1, 200
BATCH_SIZE = 500

#: How often the harness reads a completion counter (one Redis GET), in seconds.
POLL_INTERVAL = 0.002
#: How often worker memory is sampled, in seconds.
RSS_INTERVAL = 0.1
#: A phase fails when its counter has not moved for this long (a stuck or dead worker).
STALL_TIMEOUT = 60.0
#: How long a stopping worker gets after SIGTERM before its process group is killed.
STOP_TIMEOUT = 40.0


def done_key(family: str) -> str:
    """The counter every task of ``family`` increments exactly once: completion is read from it."""
    return f"bench:{family}:done"


def latency_key(family: str) -> str:
    """The Redis list a task appends its send->start latency to (latency phase only)."""
    return f"bench:{family}:latency"
