"""The worker's start banner and stop line: what an operator reads first and last."""

from __future__ import annotations

from collections import Counter

import pytest

from cogman import App, __version__
from cogman.cli.banner import WIDTH, mask_password, render
from cogman.priority import Priority
from cogman.worker.execution import Outcome
from cogman.worker.worker import describe_outcomes


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:****@127.0.0.1:5672//"),
        ("redis://:s3cret@redis.internal:6379/0", "redis://:****@redis.internal:6379/0"),
        ("amqp://user:p@ss/w0rd@host:5672/vhost", "amqp://user:****@host:5672/vhost"),
        ("mongodb://app:pw@h1:27017,h2:27017/?replicaSet=rs0", "mongodb://app:****@h1:27017,h2:27017/?replicaSet=rs0"),
        ("amqp://guest@host//", "amqp://guest@host//"),
        ("redis://127.0.0.1:6379/0?client_name=a@b", "redis://127.0.0.1:6379/0?client_name=a@b"),
        ("memory://", "memory://"),
    ],
)
def test_passwords_are_masked(url: str, shown: str):
    assert mask_password(url) == shown


def make_app(**options: object) -> App:
    app = App(
        "shop",
        broker="amqp://guest:hunter2@rabbit.internal:5672//",
        backend=["redis://:hunter2@redis.internal:6379/0", "mongodb://log:hunter2@mongo:27017"],
        **options,
    )

    @app.task(name="shop.resize", priority="high", retry=2)
    def resize(image: int) -> int:
        return image

    @app.task(name="shop.reports.build", priority="low")
    def build(day: str) -> str:
        return day

    @app.task(name="shop." + "very_long_module_name." * 6 + "task")
    def long_named() -> None:
        return None

    return app


def test_the_banner_says_what_the_worker_will_do():
    app = make_app(high_priority_queue_count=3, low_priority_queue_count=2)
    text = render(app, concurrency=4, processes=3, priorities=[Priority.HIGH], app_path="shop.tasks:app")
    assert f"cogman {__version__} worker" in text
    assert "shop (shop.tasks:app)" in text
    assert "amqp://guest:****@rabbit.internal:5672//" in text
    assert "redis://:****@redis.internal:6379/0" in text and "mongodb://log:****@mongo:27017" in text
    assert "hunter2" not in text
    assert "high_priority_queue_0, high_priority_queue_1, high_priority_queue_2 (3 queues)" in text
    assert "low_priority_queue" not in text  # -Q high: the low family is not consumed
    assert "4 handler threads x 3 processes = 12 (prefetch 8 per process)" in text
    lines = text.splitlines()
    resize = next(line for line in lines if "shop.resize" in line)
    assert "priority=high" in resize and "retry=2" in resize
    build = next(line for line in lines if "shop.reports.build" in line)
    assert "priority=low" in build and "retry=0" in build
    assert "[tasks] 3 registered" in text
    assert all(len(line) <= WIDTH for line in lines), max(lines, key=len)


def test_many_queues_and_one_process_still_fit():
    app = make_app(low_priority_queue_count=40, prefetch=5)
    text = render(app, concurrency=1, processes=1, priorities=list(Priority), metrics_port=9191)
    assert "low_priority_queue_0 .. low_priority_queue_39 (40 queues)" in text
    assert "high_priority_queue_0 (1 queue)" in text
    assert "1 handler thread, 1 process (prefetch 5 per process)" in text
    assert "Prometheus on port 9191" in text
    assert all(len(line) <= WIDTH for line in text.splitlines())


def test_an_app_without_tasks_says_so():
    text = render(App("empty", broker="memory://", backend="memory://"), concurrency=2, processes=1,
                  priorities=list(Priority))  # fmt: skip
    assert "[tasks] 0 registered" in text and "dead-lettered as unknown" in text


def test_the_stop_line_is_readable():
    counts = Counter({Outcome.SUCCEEDED: 12, Outcome.FAILED: 1, Outcome.RETRIED: 2})
    assert describe_outcomes(counts) == "12 succeeded, 1 failed, 2 retried"
    assert describe_outcomes(Counter()) == "0 succeeded, 0 failed, 0 retried"
    rare = counts + Counter({Outcome.DEAD_LETTERED: 3, Outcome.REQUEUED: 1})
    assert describe_outcomes(rare) == "12 succeeded, 1 failed, 2 retried, 3 dead-lettered, 1 requeued"
