"""The task status machine: the one place that decides whether a task may move from one state to another.

Every backend (memory, Redis, MongoDB) asks :func:`allows` (or, inside Redis, a Lua script fed from
:data:`RANK`) before it writes a status, so the rules below hold whatever stores the record.

A write whose rank is lower than or equal to the current one is ignored, which makes every write
idempotent and lets late or reordered writes (a client's ``queued`` arriving after the worker's
``success``) lose safely. The ranks::

    initiated = retry  <  queued  <  in_progress  <  failed = success = cancelled

``initiated`` and ``retry`` are the two creation states, of a first attempt and of a retry attempt: both
mean "recorded, not yet confirmed by the broker", which is what re-enqueue looks for. Cogman's Go code
ranked ``retry`` between ``in_progress`` and the final states, so a retry attempt jumped straight from
``retry`` to ``success`` and never showed that it was running; here it moves through ``queued`` and
``in_progress`` like a first attempt, and ``attempt > 1`` tells it is a retry.

``cancelled`` ranks with the other final states: a cancel wins over any status that is not final yet,
and the worker's ``success`` or ``failed`` written after it is ignored, as a late write always is.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where one attempt of a task stands."""

    INITIATED = "initiated"  #: a first attempt, recorded, not yet confirmed by the broker
    QUEUED = "queued"  #: the broker confirmed the message
    IN_PROGRESS = "in_progress"  #: a worker started the handler
    RETRY = "retry"  #: a retry attempt (after an earlier one failed), recorded, not yet confirmed
    FAILED = "failed"  #: final: the handler raised, or the message could not be run
    SUCCESS = "success"  #: final: the handler returned
    CANCELLED = "cancelled"  #: final: cancelled before it finished (``AsyncResult.cancel``; Celery's REVOKED)

    @property
    def is_final(self) -> bool:
        return self in FINAL


RANK: dict[Status, int] = {
    Status.INITIATED: 1,
    Status.RETRY: 1,
    Status.QUEUED: 2,
    Status.IN_PROGRESS: 3,
    Status.FAILED: 5,
    Status.SUCCESS: 5,
    Status.CANCELLED: 5,
}

FINAL: frozenset[Status] = frozenset({Status.FAILED, Status.SUCCESS, Status.CANCELLED})
#: Recorded but not confirmed by the broker: what re-enqueue republishes once stale.
UNCONFIRMED: tuple[Status, ...] = (Status.INITIATED, Status.RETRY)


def allows(current: Status | None, new: Status) -> bool:
    """True when a record in ``current`` may be moved to ``new``.

    ``current`` is None for a record that does not exist yet; only creation states may start one.
    """
    if current is None:
        return new in UNCONFIRMED
    return RANK[new] > RANK[current]


def parse(value: str | Status) -> Status:
    """Status from its wire value, with an error naming the bad value."""
    try:
        return Status(value)
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise ValueError(f"unknown task status {value!r}; expected one of: {known}") from None
