"""Stage stamps for ``bench/latency_stages.py``: when each step of one task's send->start happened.

Measuring the steps of a path that takes about a millisecond needs timestamps taken inside cogman, so
this module wraps four of its methods (a bench tool, never imported by cogman itself):

- client: ``PublishLink.send`` returned: the message is on RabbitMQ's socket (``published``);
- worker: ``RabbitMQConsumer._take``: the consumer's I/O thread has read the delivery (``read``);
- worker: ``Executor.execute`` called: a handler thread has picked it up (``picked_up``);
- worker: ``RedisBackend.start`` returned: the ``in_progress`` round trip is over (``started``).

The task body's own stamp (``body``) is the benchmark's latency list (bench/task_body.py). A stage's
figure is ``stamp - sent_at``, both from ``time.time()`` on one machine. :func:`targets` names every
wrapped method, so a rename in cogman fails ``tests/unit/test_bench_stages.py`` instead of this tool.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis

from bench.stats import percentile
from cogman.middleware.base import Middleware

#: The stages in the order a task goes through them; ``sent`` (zero) and ``body`` are not stamped here.
CLIENT_STAGES = ("published",)
WORKER_STAGES = ("read", "picked_up", "started")
STAGES = (*CLIENT_STAGES, *WORKER_STAGES, "body")
#: The Redis list each worker process appends its stamps to when it stops.
STAMPS_KEY = "bench:stages:stamps"


def targets() -> dict[str, tuple[Any, str]]:
    """Stage -> (class, method) it is stamped by."""
    from cogman.backends.redis.backend import RedisBackend
    from cogman.brokers.rabbitmq.consumer import RabbitMQConsumer
    from cogman.brokers.rabbitmq.publish_link import PublishLink
    from cogman.worker.execution import Executor

    return {
        "published": (PublishLink, "send"),
        "read": (RabbitMQConsumer, "_take"),
        "picked_up": (Executor, "execute"),
        "started": (RedisBackend, "start"),
    }


class Stamps:
    """(stage, task id, time.time()) triples, kept in memory while the loop runs."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float]] = []
        self._lock = threading.Lock()

    def add(self, stage: str, task_ids: Iterable[str]) -> None:
        now = time.time()
        with self._lock:
            self.rows += [(stage, task_id, now) for task_id in task_ids]


def _wrap(cls: Any, method: str, stamp: Callable[[tuple[Any, ...]], None], *, before: bool) -> None:
    original = getattr(cls, method)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if before:
            stamp(args)
            return original(*args, **kwargs)
        result = original(*args, **kwargs)
        stamp(args)
        return result

    setattr(cls, method, wrapped)


def instrument_client(stamps: Stamps) -> None:
    cls, method = targets()["published"]
    _wrap(cls, method, lambda args: stamps.add("published", [args[1].message.task_id]), before=False)


def instrument_worker(stamps: Stamps) -> None:
    found = targets()

    def delivery_id(args: tuple[Any, ...]) -> list[str]:
        task_id = args[1].headers.get("TaskID")
        return [str(task_id)] if task_id else []

    _wrap(*found["read"], lambda args: stamps.add("read", delivery_id(args)), before=True)
    _wrap(*found["picked_up"], lambda args: stamps.add("picked_up", delivery_id(args)), before=True)
    _wrap(*found["started"], lambda args: stamps.add("started", [args[1]]), before=False)


class FlushStamps(Middleware):
    """Writes a worker process's stamps to Redis when the worker stops."""

    def __init__(self, stamps: Stamps, redis_url: str) -> None:
        self.stamps = stamps
        self.redis_url = redis_url

    def worker_shutdown(self, worker: Any) -> None:
        if self.stamps.rows:
            client = redis.Redis.from_url(self.redis_url)
            client.rpush(STAMPS_KEY, *(json.dumps(row) for row in self.stamps.rows))
            client.close()


def stage_offsets(
    sent_at: Mapping[str, float], rows: Iterable[tuple[str, str, float]], body_seconds: Sequence[float]
) -> dict[str, list[float]]:
    """Milliseconds from each task's send to each stage. A stage stamped twice for one task (a start
    retried) keeps its first stamp; stamps of tasks not sent by this loop (the warm-up) are ignored."""
    first: dict[tuple[str, str], float] = {}
    for stage, task_id, at in rows:
        if task_id in sent_at:
            first.setdefault((stage, task_id), at)
    offsets: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for (stage, task_id), at in first.items():
        offsets[stage].append((at - sent_at[task_id]) * 1000)
    offsets["body"] = [seconds * 1000 for seconds in body_seconds]
    return offsets


def table(offsets: Mapping[str, Sequence[float]], reference: Sequence[float] | None = None) -> str:
    """A Markdown table: each stage's p50 and p90 since the send, and the p50 step from the stage before."""
    lines = ["| stage | p50 since the call | p90 | p50 step | samples |", "|---|---|---|---|---|"]
    previous = 0.0
    for stage in STAGES:
        values = offsets.get(stage) or []
        if not values:
            lines.append(f"| {stage} | - | - | - | 0 |")
            continue
        p50 = percentile(values, 50)
        lines.append(
            f"| {stage} | {p50:.3f} ms | {percentile(values, 90):.3f} ms | +{p50 - previous:.3f} ms | {len(values)} |"
        )
        previous = p50
    if reference:
        p50 = percentile(reference, 50)
        lines.append(f"| raw kombu, send->start (reference) | {p50:.3f} ms | {percentile(reference, 90):.3f} ms | | "
                     f"{len(reference)} |")  # fmt: skip
    return "\n".join(lines)
