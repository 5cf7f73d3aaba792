"""What a unique key costs a send: ``delay()`` without a key against ``delay()`` with a distinct key each
(so every send creates: the cost of the decision, not of a deduplication), and against sends whose key is
held (deduplicated: one script, nothing published). One client thread, RabbitMQ and Redis on this
machine, ``send_mode="recorded"``; each round runs the three modes in turn on a key prefix of its own,
deleted after:

    python bench/unique_send.py --tasks 1000 --rounds 3

It prints the microseconds per send of each mode per round and the medians (docs/control.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cogman import App  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--backend", default="redis://127.0.0.1:6379/4")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    results: dict[str, list[float]] = {"plain": [], "unique": [], "deduplicated": []}
    for number in range(options.rounds):
        prefix = f"bench-unique-{uuid.uuid4().hex[:8]}"
        app = App("bench-unique", broker=options.broker, backend=options.backend, redis_prefix=prefix,
                  queue_prefix=prefix)  # fmt: skip

        @app.task(name="bench.unique")
        def task(n: int) -> None:
            """Never runs: no worker."""

        task.delay(-1)  # connections open before the clock starts
        modes = {
            "plain": lambda i: task.delay(i),
            "unique": lambda i: task.send(args=(i,), unique_key=f"k-{i}"),
            "deduplicated": lambda i: task.send(args=(i,), unique_key="k-0"),
        }
        for mode, send in modes.items():
            started = time.perf_counter()
            for i in range(options.tasks):
                send(i)
            per_send = (time.perf_counter() - started) / options.tasks * 1e6
            results[mode].append(per_send)
            print(f"round {number + 1}: {mode}: {per_send:.0f} us per send", flush=True)
        app.close()
        _cleanup(options.backend, options.broker, prefix)
    for mode, values in results.items():
        print(f"median {mode}: {statistics.median(values):.0f} us per send")


def _cleanup(backend: str, broker: str, prefix: str) -> None:
    from kombu import Connection

    from cogman.brokers.rabbitmq.delay_ladder import delivery_exchange, level_name, unroutable_exchange
    from cogman.delays import LEVELS

    connection = redis.Redis.from_url(backend)
    keys = list(connection.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        connection.delete(*keys)
    connection.close()
    levels = [level_name(level, prefix) for level in range(LEVELS)]
    with Connection(broker, connect_timeout=5) as amqp:
        channel = amqp.channel()
        for queue in [f"{prefix}.high_priority_queue_0", f"{prefix}.low_priority_queue_0",
                      f"{prefix}.cogman.dead_letter", *levels]:  # fmt: skip
            channel.queue_delete(queue)
        for exchange in [*levels, delivery_exchange(prefix), unroutable_exchange(prefix)]:
            channel.exchange_delete(exchange)


if __name__ == "__main__":
    main()
