"""Dramatiq's side: RabbitmqBroker, Results middleware on Redis (``dramatiq bench.dramatiq_tasks``)."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from bench.settings import AMQP_URL, REDIS_URL
from bench.systems import DRAMATIQ_QUEUE
from bench.task_body import complete

broker = RabbitmqBroker(url=AMQP_URL)
broker.add_middleware(Results(backend=RedisBackend(url=REDIS_URL)))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=DRAMATIQ_QUEUE, store_results=True)
def noop(sent_at: float) -> None:
    complete("dramatiq", sent_at)
