"""Celery at cogman's guarantees: ``broker_transport_options={"confirm_publish": True}``, ``acks_late``,
Redis results (``celery -A bench.celery_confirm_tasks worker``)."""

from __future__ import annotations

from bench.celery_build import build
from bench.systems import CELERY_CONFIRM_QUEUE

app, noop = build(CELERY_CONFIRM_QUEUE, "celery-confirm", confirm_publish=True)
