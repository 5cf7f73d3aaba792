"""Helpers of the delay, expiry and retry-control tests on the real RabbitMQ and Redis."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from cogman import App, Status, TaskRecord
from cogman.sending.client import retry_task_id
from tests.integration.rabbit_helpers import LADDER_QUEUES, VHOST, rabbitmqctl
from tests.integration.redis_helpers import drop_prefix

#: Slack allowed after a planned start, for a busy CI machine (the lower bound is always exact).
LATE = 5.0


@pytest.fixture
def scheduled_app(rabbit: str, redis_url: str) -> Iterator[Callable[..., App]]:
    """``scheduled_app(broker=None, **options)``: an App on the test vhost (or ``broker``) with its own
    Redis key prefix; closed, and its keys dropped, afterwards."""
    made: list[tuple[App, str]] = []

    def make(broker: str | None = None, **options: Any) -> App:
        prefix = f"delaytest-{uuid.uuid4().hex[:8]}"
        app = App("delays", broker=broker or rabbit, backend=redis_url, redis_prefix=prefix, **options)
        made.append((app, prefix))
        return app

    yield make
    for app, prefix in reversed(made):
        for worker in list(app.running_workers):
            worker.stop()
        app.close()
        drop_prefix(redis_url, prefix)


def reached(record: TaskRecord, status: Status) -> datetime:
    """When the record reached ``status`` (its history)."""
    moments = [moment for state, moment in record.history if state is status]
    assert moments, f"task {record.task_id} never reached {status.value}: {record.history}"
    return moments[0]


def attempts(app: App, task_id: str) -> list[TaskRecord]:
    """Every attempt of a chain, first to last, by following the derived retry ids."""
    chain = []
    record = app.backend.get(task_id)
    while record is not None:
        chain.append(record)
        record = app.backend.get(retry_task_id(record.task_id))
    return chain


def queue_counts() -> dict[str, tuple[int, int]]:
    """``queue -> (unacknowledged, ready)`` in the test vhost, as RabbitMQ reports them."""
    out = rabbitmqctl(
        "list_queues", "-p", VHOST, "name", "messages_unacknowledged", "messages_ready", "--formatter", "json"
    )
    return {row["name"]: (row["messages_unacknowledged"], row["messages_ready"]) for row in json.loads(out)}


def in_ladder(counts: dict[str, tuple[int, int]]) -> dict[str, int]:
    """The delay queues holding messages, and how many each."""
    return {name: ready for name, (_, ready) in counts.items() if name in LADDER_QUEUES and ready}


def task_queue_totals(counts: dict[str, tuple[int, int]]) -> tuple[int, int]:
    """(unacknowledged, ready) summed over the task queues (not the ladder, not the dead letters)."""
    tasks = [value for name, value in counts.items() if "_priority_queue_" in name]
    return sum(u for u, _ in tasks), sum(r for _, r in tasks)
