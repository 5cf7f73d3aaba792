"""Builds Celery's side of the benchmark: an app with ``acks_late``, Redis results and JSON, publisher
confirms on or off, and the no-op task. Each task module calls it once, in its own process."""

from __future__ import annotations

from typing import Any

from celery import Celery

from bench.settings import AMQP_URL, REDIS_URL
from bench.task_body import complete


def build(queue: str, family: str, *, confirm_publish: bool) -> tuple[Celery, Any]:
    app = Celery(f"bench_{family}", broker=AMQP_URL, backend=REDIS_URL)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
    )
    if confirm_publish:
        app.conf.broker_transport_options = {"confirm_publish": True}

    @app.task(name="bench.celery.noop")
    def noop(sent_at: float) -> None:
        complete(family, sent_at)

    return app, noop
