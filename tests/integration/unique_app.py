"""The app of tests/integration/test_unique_tasks.py: a unique task whose runs are counted from its body.

Broker and backend come from ``COGMAN_BROKER_URL`` / ``COGMAN_BACKEND_URL``; ``COGMAN_TEST_PREFIX``
isolates the Redis keys of one test, and each run of ``charge`` increments ``<prefix>:runs:<invoice>``
in that Redis, the count the test checks (never cogman's own bookkeeping). Run as a script, it sends
``charge(invoice)`` ``count`` times and prints one line per send: the task id and whether it was
deduplicated.
"""

from __future__ import annotations

import os
import sys

import redis

from cogman import App

PREFIX = os.environ.get("COGMAN_TEST_PREFIX", "cogman")
app = App("unique", redis_prefix=PREFIX)


def runs_key(invoice_id: str) -> str:
    return f"{PREFIX}:runs:{invoice_id}"


@app.task(name="unique.charge", unique_key=lambda invoice_id: f"invoice-{invoice_id}")
def charge(invoice_id: str) -> str:
    counter = redis.Redis.from_url(os.environ["COGMAN_BACKEND_URL"])
    try:
        counter.incr(runs_key(invoice_id))
    finally:
        counter.close()
    return f"charged {invoice_id}"


if __name__ == "__main__":
    invoice, count = sys.argv[1], int(sys.argv[2])
    sys.stdin.readline()  # the test releases every sender at once
    for _ in range(count):
        sent = charge.delay(invoice)
        print(sent.id, int(sent.deduplicated), flush=True)
    app.close()
