"""The app of the Sentinel fault tests (tests/cluster/test_redis_sentinel.py).

Broker, backend (a ``redis+sentinel://`` URL) and ``redis_wait_replicas`` come from ``COGMAN_*`` variables;
``COGMAN_TEST_PREFIX`` isolates one run's keys. Each run of ``sentinel.count`` adds 1 to its index in the
hash ``<prefix>:runs`` of ``COGMAN_TEST_COUNT_URL``, the suite's own Redis, not the Sentinel set: the count
must survive the failover it measures.
"""

from __future__ import annotations

import os

import redis

from cogman import App

PREFIX = os.environ.get("COGMAN_TEST_PREFIX", "cogman")
app = App("sentinel", redis_prefix=PREFIX)
_counts = redis.Redis.from_url(os.environ.get("COGMAN_TEST_COUNT_URL", "redis://127.0.0.1:6379/15"))


@app.task(name="sentinel.count")
def count(index: int) -> int:
    return int(_counts.hincrby(f"{PREFIX}:runs", str(index), 1))
