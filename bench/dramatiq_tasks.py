"""Dramatiq's side at its defaults: RabbitmqBroker without publisher confirms, Results middleware on Redis
(``dramatiq bench.dramatiq_tasks``). bench.dramatiq_confirm_tasks is the same at cogman's guarantees."""

from __future__ import annotations

from bench.dramatiq_build import build
from bench.systems import DRAMATIQ_QUEUE

broker, noop = build(DRAMATIQ_QUEUE, "dramatiq", confirm_delivery=False)
