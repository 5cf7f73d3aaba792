"""Celery's side: prefork worker, ``acks_late``, Redis results, JSON (``celery -A bench.celery_tasks worker``)."""

from __future__ import annotations

from celery import Celery

from bench.settings import AMQP_URL, REDIS_URL
from bench.systems import CELERY_QUEUE
from bench.task_body import complete

app = Celery("bench_celery", broker=AMQP_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_default_queue=CELERY_QUEUE,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.celery.noop")
def noop(sent_at: float) -> None:
    complete("celery", sent_at)
