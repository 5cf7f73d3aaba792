"""Two apps on one vhost (issue 19, item 19), on the real RabbitMQ: with ``queue_prefix`` each declares
its own queues, dead-letter queue and delay ladder and runs only its own tasks; without it, a worker
starting on queues that a worker of another app consumes says so."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator

import pytest
from kombu import Connection

from cogman import App
from cogman.brokers.base import DEAD_LETTER_QUEUE, prefixed, queue_names
from cogman.brokers.rabbitmq.delay_ladder import delivery_exchange, level_name, unroutable_exchange
from cogman.delays import LEVELS
from cogman.priority import Priority
from tests.integration.rabbit_helpers import list_queues, wait_for
from tests.integration.redis_helpers import drop_prefix

PREFIXES = ("shop", "bench", "outlet")


def declared(prefix: str) -> tuple[list[str], list[str]]:
    """(queues, exchanges) cogman declares for ``prefix``."""
    ladder = [level_name(level, prefix) for level in range(LEVELS)]
    queues = [*queue_names(Priority.HIGH, 1, prefix), *queue_names(Priority.LOW, 1, prefix)]
    return [*queues, prefixed(prefix, DEAD_LETTER_QUEUE), *ladder], [
        *ladder,
        delivery_exchange(prefix),
        unroutable_exchange(prefix),
    ]


def drop(url: str) -> None:
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        for prefix in PREFIXES:
            queues, exchanges = declared(prefix)
            for name in queues:
                channel.queue_delete(name)
            for name in exchanges:
                channel.exchange_delete(name)


@pytest.fixture
def vhost(rabbit: str) -> Iterator[str]:
    """The test vhost without the prefixed queues and exchanges, before and after."""
    drop(rabbit)
    yield rabbit
    drop(rabbit)


def test_two_apps_with_their_own_prefix_on_one_vhost_run_only_their_own_tasks(
    vhost: str, rabbit_app: Callable[..., App]
):
    shop = rabbit_app("shop", queue_prefix="shop")
    bench = rabbit_app("bench", queue_prefix="bench")

    @shop.task(name="shop.order")
    def order(index: int) -> str:
        return f"order {index}"

    @bench.task(name="bench.load")
    def load(index: int) -> str:
        return f"load {index}"

    workers = [shop.start_background(concurrency=2), bench.start_background(concurrency=2)]
    try:
        orders = [order.delay(i) for i in range(20)] + [shop.send_task("shop.order", (20,), countdown=1)]
        loads = [load.delay(i) for i in range(20)] + [bench.send_task("bench.load", (20,), countdown=1)]
        # A task that reached the other app's worker would be dead-lettered as unknown: get() would raise.
        assert [r.get(timeout=30) for r in orders] == [f"order {i}" for i in range(21)]
        assert [r.get(timeout=30) for r in loads] == [f"load {i}" for i in range(21)]
        assert shop.broker.dead_letters() == [] and bench.broker.dead_letters() == []
    finally:
        for worker in workers:
            worker.stop()
    names = set(list_queues())
    for prefix in ("shop", "bench"):
        queues, _ = declared(prefix)
        assert set(queues) <= names
    assert not {"high_priority_queue_0", "low_priority_queue_0", DEAD_LETTER_QUEUE} & names  # none unprefixed
    stats = {q.name: q for q in shop.broker.queue_stats()}
    assert {"shop.high_priority_queue_0", "shop.cogman.dead_letter", "shop.cogman.delay.0"} <= set(stats)


def test_a_worker_warns_when_another_app_consumes_its_queues(
    vhost: str, rabbit_app: Callable[..., App], redis_url: str, caplog: pytest.LogCaptureFixture
):
    prefix = f"prefixtest-{uuid.uuid4().hex[:8]}"
    backend = {"backend": redis_url, "redis_prefix": prefix}
    bench = rabbit_app("bench", **backend)
    shop = rabbit_app("shop", **backend)
    outlet = rabbit_app("outlet", queue_prefix="outlet", **backend)  # its own queues: nothing to say
    # A worker of another app on another vhost (its heartbeat says where): no conflict either.
    far = {"id": "far", "app": "far", "queues": ["high_priority_queue_0"], "broker": "10.0.0.9:5672/other"}
    bench.backend.record_heartbeat("far", far, ttl=60)
    workers = [bench.start_background(concurrency=1)]
    try:
        wait_for(lambda: any(w["app"] == "bench" for w in bench.backend.live_workers()), 10, "bench's heartbeat")
        with caplog.at_level(logging.WARNING, logger="cogman.heartbeat"):
            workers.append(shop.start_background(concurrency=1))
            workers.append(outlet.start_background(concurrency=1))
            # Each looks for other apps before its first heartbeat: once both beat, both have looked.
            wait_for(lambda: {"shop", "outlet"} <= {w["app"] for w in bench.backend.live_workers()}, 10, "their beats")
    finally:
        for worker in workers:
            worker.stop()
        drop_prefix(redis_url, prefix)
    warnings = [r.getMessage() for r in caplog.records if r.name == "cogman.heartbeat" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "of app 'bench'" in warnings[0] and "high_priority_queue_0, low_priority_queue_0" in warnings[0]
    assert "worker of app 'shop'" in warnings[0] and "own vhost" in warnings[0]
