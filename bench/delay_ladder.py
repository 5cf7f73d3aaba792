"""What the delay ladder costs and how precise it is, on the local RabbitMQ (docs/scheduling.md quotes it).

``python bench/delay_ladder.py`` (or ``--quick``) prints three figures:

1. declaring the ladder and its exit on a fresh connection, pipelined (as cogman does) and one declare
   at a time;
2. how late delayed tasks start on an idle worker: ``started - eta`` over tasks with random countdowns;
3. a worker process's memory and the broker's unacked count before and after 100,000 tasks are
   scheduled an hour ahead (they wait in the ladder, not in the worker).

It uses its own vhost, ``cogman_bench_delay`` (``BENCH_DELAY_AMQP_URL`` overrides the URL), and deletes
the ladder's queues when done.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kombu import Connection

from cogman import App, Status
from cogman.brokers.base import DEAD_LETTER_QUEUE
from cogman.brokers.rabbitmq.connection import dial
from cogman.brokers.rabbitmq.delay_ladder import (
    DELIVERY_EXCHANGE,
    UNROUTABLE_EXCHANGE,
    level_arguments,
    level_bindings,
    level_name,
)
from cogman.brokers.rabbitmq.topology import Topology
from cogman.delays import LEVELS

VHOST = "cogman_bench_delay"
URL = os.environ.get("BENCH_DELAY_AMQP_URL", f"amqp://guest:guest@127.0.0.1:5672/{VHOST}")
ROOT = Path(__file__).resolve().parents[1]

app = App("bench-delay", broker=URL, backend="memory://")


@app.task(name="bench.delay.noop")
def noop(index: int) -> int:
    return index


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=120).stdout


def ensure_vhost() -> None:
    if VHOST not in rabbitmqctl("list_vhosts"):
        rabbitmqctl("add_vhost", VHOST)
    rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")


def delete_queues() -> None:
    with Connection(URL) as connection:
        channel = connection.channel()
        for name in [level_name(level) for level in range(LEVELS)] + ["high_priority_queue_0", "low_priority_queue_0"]:
            channel.queue_delete(name)


def one_at_a_time(connection: Any) -> None:
    """What ``Topology.declare_delays`` sends, with a round trip per declare (what cogman avoids)."""
    channel = connection.channel()
    channel.exchange_declare(UNROUTABLE_EXCHANGE, "fanout", durable=True, auto_delete=False)
    channel.queue_bind(DEAD_LETTER_QUEUE, UNROUTABLE_EXCHANGE, routing_key="")
    arguments = {"alternate-exchange": UNROUTABLE_EXCHANGE}
    channel.exchange_declare(DELIVERY_EXCHANGE, "topic", durable=True, auto_delete=False, arguments=arguments)
    for name in ("high_priority_queue_0", "low_priority_queue_0"):
        channel.queue_bind(name, DELIVERY_EXCHANGE, routing_key=f"#.{name}")
    for level in reversed(range(LEVELS)):
        name, (into_queue, _) = level_name(level), level_bindings(level)
        channel.exchange_declare(name, "topic", durable=True, auto_delete=False)
        channel.queue_declare(name, durable=True, auto_delete=False, arguments=level_arguments(level, "classic"))
        channel.queue_bind(name, name, routing_key=into_queue)
    for level in reversed(range(LEVELS)):
        lower = level_name(level - 1) if level else DELIVERY_EXCHANGE
        channel.exchange_bind(lower, level_name(level), routing_key=level_bindings(level)[1])
    channel.close()


def declare_cost(rounds: int) -> dict[str, float]:
    topology = Topology()

    def pipelined(connection: Any) -> None:
        topology.declare_delays(connection, ladder=True)

    figures = {}
    for label, declare in (("pipelined_ms", pipelined), ("one_at_a_time_ms", one_at_a_time)):
        times = []
        for _ in range(rounds):
            connection = dial(URL, timeout=5)
            topology.declare(connection.channel())
            began = time.perf_counter()
            declare(connection)
            times.append((time.perf_counter() - began) * 1000)
            connection.release()
        figures[label] = round(statistics.median(times), 1)
    return figures


def lateness(tasks: int) -> dict[str, float]:
    worker = app.start_background(concurrency=4)
    try:
        results = [noop.send(args=(index,), countdown=random.uniform(0.5, 5.0)) for index in range(tasks)]
        for result in results:
            result.get(timeout=60)
        late = []
        for result in results:
            record = result.record()
            started = next(moment for status, moment in record.history if status is Status.IN_PROGRESS)
            assert record.eta is not None
            late.append((started - record.eta).total_seconds())
    finally:
        worker.stop()
    late.sort()
    return {
        "tasks": tasks,
        "min_s": round(late[0], 3),
        "p50_s": round(late[len(late) // 2], 3),
        "p95_s": round(late[int(len(late) * 0.95)], 3),
        "max_s": round(late[-1], 3),
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def task_queue_unacked() -> int:
    out = rabbitmqctl("list_queues", "-p", VHOST, "name", "messages_unacknowledged", "--formatter", "json")
    return sum(row["messages_unacknowledged"] for row in json.loads(out) if "_priority_queue_" in row["name"])


def held_by_a_worker(tasks: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "cogman", "-A", "bench.delay_ladder:app", "worker", "-c", "4"]
    worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)  # a benchmark, not a test: let the worker settle before the first sample
        before = rss_mib(worker.pid)
        for start in range(0, tasks, 5_000):
            app.send_many(
                "bench.delay.noop", [((i,), {}) for i in range(start, min(tasks, start + 5_000))], countdown=3600
            )
        time.sleep(5)
        return {
            "tasks": tasks,
            "worker_rss_before_mib": round(before, 1),
            "worker_rss_after_mib": round(rss_mib(worker.pid), 1),
            "unacked_in_task_queues": task_queue_unacked(),
        }
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and tasks (a smoke run)")
    quick = parser.parse_args().quick
    ensure_vhost()
    delete_queues()
    try:
        print("declare the ladder:", declare_cost(5 if quick else 30))
        print("lateness on an idle worker:", lateness(50 if quick else 300))
        print("worker with delayed tasks waiting:", held_by_a_worker(10_000 if quick else 100_000))
    finally:
        app.close()
        delete_queues()
    print(f"(RabbitMQ {rabbitmqctl('version').strip()}, {datetime.now(UTC):%Y-%m-%d})")


if __name__ == "__main__":
    main()
