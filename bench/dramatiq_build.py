"""Builds Dramatiq's side of the benchmark: a RabbitmqBroker (with or without publisher confirms), Results
middleware on Redis, and the no-op actor. Each task module calls it once, in its own process."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from bench.settings import AMQP_URL, REDIS_URL
from bench.task_body import complete


def build(queue: str, family: str, *, confirm_delivery: bool) -> tuple[RabbitmqBroker, Any]:
    """The broker (set as Dramatiq's global one) and the no-op actor; one per worker or sender process."""
    broker = RabbitmqBroker(url=AMQP_URL, confirm_delivery=confirm_delivery)
    broker.add_middleware(Results(backend=RedisBackend(url=REDIS_URL)))
    dramatiq.set_broker(broker)

    @dramatiq.actor(actor_name="noop", queue_name=queue, store_results=True)
    def noop(sent_at: float) -> None:
        complete(family, sent_at)

    return broker, noop
