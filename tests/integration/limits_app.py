"""The app of tests/integration/test_limits_fleet.py: limited tasks whose bodies report what they see.

Broker and backend come from ``COGMAN_BROKER_URL`` / ``COGMAN_BACKEND_URL``, the lease from
``COGMAN_CONCURRENCY_LEASE``; ``COGMAN_TEST_PREFIX`` isolates the Redis keys of one test, cogman's and
the bodies' own. The bodies write to Redis directly: a counter of the runs of a key going on now
(INCR at the start, DECR at the end) with every value it took, and the start time and process of each
run. The test reads those, never cogman's bookkeeping.
"""

from __future__ import annotations

import json
import os
import threading
import time

import redis

from cogman import App

PREFIX = os.environ.get("COGMAN_TEST_PREFIX", "cogman")
app = App("limits-fleet", redis_prefix=PREFIX)
_redis = redis.Redis.from_url(os.environ.get("COGMAN_BACKEND_URL", "redis://127.0.0.1:6379/15"))


def key(name: str) -> str:
    return f"{PREFIX}:body:{name}"


def started(what: str, **fields: object) -> None:
    _redis.rpush(key(f"starts:{what}"), json.dumps({"t": time.time(), "pid": os.getpid(), **fields}))


def running(scope: str, seconds: float) -> None:
    """One run of ``scope``: counted while it works for ``seconds``."""
    now = _redis.incr(key(f"running:{scope}"))
    _redis.rpush(key(f"seen:{scope}"), now)
    try:
        threading.Event().wait(seconds)
    finally:
        _redis.decr(key(f"running:{scope}"))


@app.task(name="fleet.rate", rate_limit="5/s")
def rate(number: int) -> int:
    started("rate", n=number)
    return number


@app.task(name="fleet.per_customer", max_concurrency=2, concurrency_key=lambda customer, **kw: customer)
def per_customer(customer: str, run: int) -> None:
    started("per_customer", customer=customer, run=run)
    running(customer, 0.2)


@app.task(name="fleet.long", max_concurrency=1)
def long(run: int, seconds: float) -> None:
    """Runs for longer than the lease: only renewals keep its slot."""
    started("long", run=run)
    running("long", seconds)


@app.task(name="fleet.blocker", max_concurrency=1)
def blocker(run: str, block: bool) -> str:
    """With ``block``, its first run blocks until its worker is killed; a later run (the redelivery)
    returns at once."""
    first = bool(_redis.set(key(f"first:{run}"), os.getpid(), nx=True))
    started("blocker", run=run, first=first)
    if block and first:
        threading.Event().wait(600)
    return run
