"""The store of limits: one atomic step per question, in the backend every worker shares.

Every backend implements ``LimitStore`` (``Backend.limits()``): Redis with one Lua script per step on the
server's clock (cogman/backends/redis/limits.py), the memory backend under a lock
(cogman/backends/memory/limits.py), MongoDB with conditional updates of one document per scope
(cogman/backends/mongo/limits.py). None of them parks a call during an outage: a limit is never
assumed, so a call raises BackendUnavailable and the worker waits like any backend call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from cogman.limits.policy import Rate


class LimitStore(Protocol):
    def take_start(self, scope: str, rate: Rate, token: str) -> float:
        """If one more start fits ``rate`` in scope ``scope`` (no more than ``rate.count`` in any window
        of ``rate.period`` seconds), log it under ``token`` and return 0; else log nothing and return the
        seconds until one fits."""

    def acquire_slot(self, scope: str, holder: str, limit: int, lease: float) -> bool:
        """Take (or, for a holder that has it, extend) one of ``limit`` slots of ``scope`` for ``lease``
        seconds; False when all are held by leases that have not expired."""

    def renew_slots(self, held: Sequence[tuple[str, str]], lease: float) -> list[tuple[str, str]]:
        """Extend these ``(scope, holder)`` leases by ``lease`` seconds from now; return those that had
        expired already (never taken back: their slot may be someone else's now)."""

    def release_slot(self, scope: str, holder: str) -> None:
        """Free the slot; nothing happens if it is not held."""

    def note_waiting(self, task_id: str, reason: str, ttl: float) -> None:
        """Say why the task waits (the API shows it while the task has not started), for ``ttl`` seconds."""

    def waiting(self, task_id: str) -> str | None:
        """The note of ``note_waiting``, or None once it expired."""
