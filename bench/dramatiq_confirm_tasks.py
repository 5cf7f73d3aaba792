"""Dramatiq at cogman's guarantees: publisher confirms on (``confirm_delivery=True``), Redis results, acks
after the actor (Dramatiq's default) (``dramatiq bench.dramatiq_confirm_tasks``)."""

from __future__ import annotations

from bench.dramatiq_build import build
from bench.systems import DRAMATIQ_CONFIRM_QUEUE

broker, noop = build(DRAMATIQ_CONFIRM_QUEUE, "dramatiq-confirm", confirm_delivery=True)
