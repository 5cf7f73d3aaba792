"""Celery's side at its defaults plus ``acks_late``: prefork worker, Redis results, JSON, no publisher
confirms (``celery -A bench.celery_tasks worker``). bench.celery_confirm_tasks adds confirms."""

from __future__ import annotations

from bench.celery_build import build
from bench.systems import CELERY_QUEUE

app, noop = build(CELERY_QUEUE, "celery", confirm_publish=False)
