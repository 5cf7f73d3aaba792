"""cogman's side: the worker's app (``cogman -A bench.cogman_tasks:app worker``) and the senders' apps."""

from __future__ import annotations

from typing import Any

from bench.settings import AMQP_URL, REDIS_URL
from bench.task_body import complete
from cogman import App

TASK_NAME = "bench.noop"


def noop(sent_at: float) -> None:
    complete("cogman", sent_at)


def make_app(**options: Any) -> App:
    """An app with the benchmark task; a sender passes ``send_mode=...`` when the mode exists."""
    app = App("bench", broker=AMQP_URL, backend=REDIS_URL, **options)
    app.task(name=TASK_NAME)(noop)
    return app


app = make_app()
