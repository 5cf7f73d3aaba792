"""The body every benchmarked task runs, whatever the system: one Redis ``INCR``, nothing else.

In the latency phase the sender passes its wall-clock send time; the body then also appends
``start - sent_at`` to a list, in the same round trip. Wall clocks are comparable because every
process runs on the same machine.
"""

from __future__ import annotations

import time

import redis

from bench.settings import REDIS_URL, done_key, latency_key

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    # Created lazily: a forking worker (Celery prefork, Dramatiq) must not share a socket with its
    # parent; redis-py's pool also resets itself when it sees a new pid.
    global _client
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    return _client


def complete(family: str, sent_at: float) -> None:
    """Count one finished task of ``family``; record its send->start latency when ``sent_at`` is set."""
    started = time.time()
    client = _redis()
    if sent_at:
        pipe = client.pipeline(transaction=False)
        pipe.rpush(latency_key(family), started - sent_at)
        pipe.incr(done_key(family))
        pipe.execute()
    else:
        client.incr(done_key(family))
