"""The earlier, in-process harness: send N no-op tasks, drain them with a worker, report rates.

Kept for the ``memory://`` stack and for quick back-to-back comparisons of one change; the comparison
with raw kombu, Celery and Dramatiq is ``python bench/run.py`` (``nox -s bench``).

    python bench/throughput.py --stack memory            # embedded default
    python bench/throughput.py --stack rabbit-redis      # RabbitMQ + Redis on 127.0.0.1
    python bench/throughput.py --stack kombu             # raw kombu publish+consume, the floor to compare with

Timing goals live here, never in the test suite. Numbers are printed as one JSON line per run so
successive runs can be compared (`python bench/throughput.py --stack rabbit-redis --tasks 20000`).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
REDIS_URL = "redis://127.0.0.1:6379/14"


def run_cogman(stack: str, tasks: int, concurrency: int, batch: int) -> dict[str, float]:
    from cogman import App, Middleware

    done = threading.Semaphore(0)

    class Done(Middleware):
        def after_execute(self, message, *, result=None, exception=None):  # type: ignore[no-untyped-def]
            done.release()

    if stack == "memory":
        app = App("bench", broker="memory://", backend="memory://", middleware=[Done()])
    else:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        app = App("bench", broker=AMQP_URL, backend=REDIS_URL, middleware=[Done()])

    @app.task(name="bench.noop")
    def noop(i: int) -> int:
        return i

    app.client  # noqa: B018 - connect before timing
    started = time.perf_counter()
    if batch > 1:
        for offset in range(0, tasks, batch):
            noop.send_many([(i,) for i in range(offset, min(tasks, offset + batch))])
    else:
        for i in range(tasks):
            noop.delay(i)
    sent = time.perf_counter() - started
    worker = app.start_background(concurrency=concurrency)
    drain_started = time.perf_counter()
    for _ in range(tasks):
        if not done.acquire(timeout=120):
            raise SystemExit("bench: tasks did not finish within 120 s")
    drained = time.perf_counter() - drain_started
    worker.stop()
    app.close()
    return {"send_per_s": tasks / sent, "drain_per_s": tasks / drained, "send_s": sent, "drain_s": drained}


def run_kombu(tasks: int) -> dict[str, float]:
    from kombu import Connection, Consumer, Producer, Queue

    queue = Queue(f"bench-{uuid.uuid4().hex[:8]}", durable=True, auto_delete=True)
    received = 0
    with Connection(AMQP_URL, transport_options={"confirm_publish": True}) as conn:
        producer = Producer(conn.channel())
        started = time.perf_counter()
        for i in range(tasks):
            producer.publish(
                {"i": i},
                routing_key=queue.name,
                declare=[queue] if i == 0 else None,
                delivery_mode=2,
                serializer="json",
            )
        sent = time.perf_counter() - started

        def on_message(body: object, message: object) -> None:
            nonlocal received
            received += 1
            message.ack()  # type: ignore[attr-defined]

        drain_started = time.perf_counter()
        with Consumer(conn.channel(), [queue], callbacks=[on_message], prefetch_count=100):
            while received < tasks:
                conn.drain_events(timeout=10)
        drained = time.perf_counter() - drain_started
    return {"send_per_s": tasks / sent, "drain_per_s": tasks / drained, "send_s": sent, "drain_s": drained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", choices=["memory", "rabbit-redis", "kombu"], action="append")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="send in batches of this size (send_many)")
    args = parser.parse_args()
    for stack in args.stack or ["memory", "rabbit-redis", "kombu"]:
        if stack == "kombu":
            figures = run_kombu(args.tasks)
        else:
            figures = run_cogman(stack, args.tasks, args.concurrency, args.batch)
        rounded = {key: round(value, 3) for key, value in figures.items()}
        print(json.dumps({"stack": stack, "tasks": args.tasks, "batch": args.batch, **rounded}), flush=True)


if __name__ == "__main__":
    main()
