"""What cancel costs a worker (docs/control.md quotes it): ``python bench/cancel_poll.py``.

1. The poll: one ``Backend.cancelled_among`` call for the ids a worker process runs, made about once a
   second and only while attempts run. Its latency on the local Redis (``BENCH_CANCEL_REDIS_URL``,
   default db 2, a throwaway key prefix deleted afterwards) and on the memory backend, for 1 to 256
   running ids; the median and 99th percentile of ``--calls`` calls.
2. What every attempt pays even when nothing is cancelled: ``CancelWatch.run`` around a handler that
   returns at once (registering the attempt, arming and disarming the interrupt), against calling the
   handler directly; microseconds per attempt, the best of 5 rounds of ``--attempts``.
3. How soon a running attempt stops: a worker in this process (memory:// broker, the Redis backend)
   runs a loop of 10 ms sleeps; the seconds from ``cancel()`` returning to the handler's ``finally``,
   over ``--runs`` cancels, for a sync and an async handler (the poll runs once a second, so up to
   about a second plus a round trip).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from cogman import Config, Priority, Status, TaskRecord
from cogman.backends.base import Backend
from cogman.backends.memory import MemoryBackend
from cogman.backends.redis.backend import RedisBackend
from cogman.record import utcnow
from cogman.worker.cancelling import CancelWatch

SIZES = (1, 8, 64, 256)


def running_records(backend: Backend, count: int) -> list[str]:
    now = utcnow()
    ids = [str(uuid.uuid4()) for _ in range(count)]
    backend.create([TaskRecord(task_id=i, name="bench.cancel", original_task_id=i, priority=Priority.HIGH,
                               payload={"args": [], "kwargs": {}}, status=Status.INITIATED, created_at=now,
                               updated_at=now) for i in ids])  # fmt: skip
    backend.transition_many(ids, Status.IN_PROGRESS)
    return ids


def poll_latency(backend: Backend, calls: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in SIZES:
        ids = running_records(backend, size)
        backend.cancel(ids[0])
        times = []
        for _ in range(calls):
            begun = time.perf_counter()
            found = backend.cancelled_among(ids)
            times.append(time.perf_counter() - begun)
            assert found == [ids[0]]
        times.sort()
        out[str(size)] = {"median_us": round(statistics.median(times) * 1e6, 1),
                          "p99_us": round(times[int(len(times) * 0.99) - 1] * 1e6, 1)}  # fmt: skip
    return out


def per_attempt(attempts: int) -> dict[str, float]:
    watch = CancelWatch(MemoryBackend())

    def handler(running: object = None) -> int:
        return 1

    def best(run: Any) -> float:
        rounds = []
        for _ in range(5):
            begun = time.perf_counter()
            run()
            rounds.append((time.perf_counter() - begun) / attempts)
        return min(rounds) * 1e6

    direct = best(lambda: [handler() for _ in range(attempts)])
    watched = best(lambda: [watch.run("t", False, handler) for _ in range(attempts)])
    return {"direct_us": round(direct, 2), "watched_us": round(watched, 2), "added_us": round(watched - direct, 2)}


def interrupt_latency(url: str, prefix: str, runs: int) -> dict[str, Any]:
    import asyncio
    import threading

    from cogman import App

    app = App("bench-cancel", broker="memory://", backend=url, redis_prefix=prefix)
    started, stopped = threading.Event(), threading.Event()

    @app.task(name="bench.sync_loop")
    def sync_loop() -> None:
        started.set()
        try:
            while True:
                time.sleep(0.01)
        finally:
            stopped.set()

    @app.task(name="bench.async_loop")
    async def async_loop() -> None:
        started.set()
        try:
            while True:
                await asyncio.sleep(0.01)
        finally:
            stopped.set()

    worker = app.start_background(concurrency=1)
    out: dict[str, Any] = {}
    try:
        for task in (sync_loop, async_loop):
            seconds = []
            for _ in range(runs):
                started.clear()
                stopped.clear()
                result = task.delay()
                assert started.wait(30)
                assert result.cancel()
                cancelled = time.perf_counter()
                assert stopped.wait(30)
                seconds.append(time.perf_counter() - cancelled)
            out[task.name] = {"median_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3)}
    finally:
        worker.stop()
        app.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--attempts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    url = os.environ.get("BENCH_CANCEL_REDIS_URL", "redis://127.0.0.1:6379/2")
    prefix = f"bench-cancel-{uuid.uuid4().hex[:8]}"
    backend = RedisBackend(url, Config(broker_url="memory://", backend_url=url, redis_prefix=prefix))
    try:
        report = {
            "command": "python bench/cancel_poll.py " + " ".join(sys.argv[1:]),
            "redis_poll": poll_latency(backend, args.calls),
            "memory_poll": poll_latency(MemoryBackend(), args.calls),
            "per_attempt": per_attempt(args.attempts),
            "interrupt": interrupt_latency(url, prefix, args.runs),
        }
    finally:
        backend.close()
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
