"""What a backend keeps for Go-format tasks (``Backend.go_records()``): Go's records, Go's rules.

Every method is one atomic step on the store: the Redis one is a Lua script per change
(cogman/backends/redis/go_records.py), the in-process one runs under a lock
(cogman/backends/memory/go_records.py), so two writers can never lose each other's change as Go's own
read-modify-write cycles do (its retry-count decrement overwrote a ``failed`` 0.2 ms later in the
captured retry run, leaving the original ``in_progress`` for good).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cogman.errors import CorruptRecord
from cogman.gowire.record import GoRecord, go_allows, go_retry_id, go_time
from cogman.record import TaskRecord
from cogman.status import Status

#: The longest retry chain ``read_as_task`` follows.
MAX_CHAIN = 1000
#: The most Go records ``recent`` returns, the newest: listing filters them in process, so a call's work
#: stays bounded however many Go-format tasks the window holds.
MAX_LISTED = 1000
#: The most keys one listing's search for Go records visits (Redis: SCAN from where the last one stopped),
#: so a listing's cost is bounded by this, not by the size of the database Go shares.
MAX_SCANNED = 10_000


@dataclass(frozen=True, slots=True)
class GoStarted:
    """What ``GoRecords.start`` did: the record as it then stands (None when there is none, or the key
    holds something else), and how many deliveries of the task started, this one included (0 when the
    record is final: it is not run again)."""

    record: GoRecord | None
    starts: int


class GoRecords(Protocol):
    """Go records: the JSON under the bare TaskID, as Go Cogman reads and writes it."""

    def create(self, record: GoRecord) -> bool:
        """Store ``record`` if no record has its id (a replayed create never resets one that moved on);
        True when this call stored it."""

    def update(
        self, task_id: str, status: Status, *, fail_error: str | None = None, duration: float | None = None
    ) -> GoRecord | None:
        """Move the record to ``status`` if that outranks its status (Go's ranks), with its fields, in
        one step; the record as it then stands (moved or not), None when unknown or the write was
        parked (the store is unreachable)."""

    def take_retry(self, original_task_id: str) -> int | None:
        """Take one retry from the budget (``Retry``) of the chain's original if it is above 0, in one
        step; the budget left, None when it is spent or the record unknown."""

    def add_retries(self, task_id: str, count: int) -> int | None:
        """Add ``count`` to the record's ``Retry``, in one step, as Go's REST ``/retry`` does before it
        takes one for the retry it makes; the budget then, None when the record is unknown."""

    def delete(self, task_ids: Sequence[str]) -> None:
        """Remove these records and what is kept beside them (listing entries, counted starts); unknown
        ids are ignored. Ordered after this process's earlier writes, as ``Backend.delete``."""

    def start(self, task_id: str, token: str) -> GoStarted | None:
        """Move the record to ``in_progress`` (Go's ranks) and count this delivery's start, in one step
        (Redis: one script; memory: one lock; MongoDB: the record's compare-and-set, then the count,
        each idempotent). ``token`` names the delivery: the calls made again for it (retries, replays of
        a write parked during an outage) count once; "" counts each call. Starts are kept beside Go's
        record, which has no field for them (Redis ``<prefix>:go-starts:<id>``, MongoDB
        ``<collection>_go_starts``), for the TTL, counted with or without a record but not once it is
        final: a Go task that kills its worker each time is dead-lettered past ``max_redeliveries``
        (cogman/worker/delivery_limits.py) instead of looping. None when the write was parked."""

    def get(self, task_id: str) -> GoRecord | None:
        """The record, None when there is none; CorruptRecord when the key holds something else."""

    def recent(self, names: frozenset[str] = frozenset()) -> list[GoRecord]:
        """The Go records readers list (cogman/backends/go_query.py: ``/list``, ``/daterangecount``, the
        dashboard, ``cogman list``), the ``MAX_LISTED`` newest within the TTL: those a cogman process
        of this app (``redis_prefix``) created or started, and those of the tasks ``names`` that a Go
        process wrote and this store has found. Go keeps no index in Redis, so with ``names`` each call
        first searches up to ``MAX_SCANNED`` more keys (resuming where the last call stopped); Go's
        records carry no app, so the names keep an app's listing to its own Go-format tasks. In memory
        every record is a cogman process's."""


def updated(
    record: GoRecord, status: Status, fail_error: str | None, duration: float | None, now: str | None = None
) -> GoRecord | None:
    """``record`` moved to ``status`` as Go moves it, or None when Go's ranks forbid it. ``success``
    sets ``Duration``; ``failed`` sets ``FailError`` and clears ``Duration`` (as Go does)."""
    if not go_allows(record.status, status):
        return None
    changes: dict[str, object] = {"status": status, "updated_at": now or go_time()}
    if status is Status.SUCCESS:
        changes["duration"] = duration
    elif status is Status.FAILED:
        changes["duration"] = None
        changes["fail_error"] = fail_error or ""
    elif fail_error is not None:
        changes["fail_error"] = fail_error
    return record.evolve(**changes)


def read_as_task(records: GoRecords, task_id: str) -> TaskRecord | None:
    """The Go record under ``task_id`` as cogman's readers show it (``Backend.get`` falls back to it),
    None when there is none or the key holds anything else (a bare id is not ours to judge). A failed
    original whose retries a cogman worker made points at the chain's latest attempt
    (``latest_attempt_id``, as cogman's own records do), so ``AsyncResult`` follows the retries."""
    try:
        record = records.get(task_id)
        if record is None:
            return None
        task = record.to_task_record()
        if record.status is not Status.FAILED or record.task_id != record.original_task_id:
            return task
        latest = None
        for _ in range(MAX_CHAIN):
            attempt = records.get(go_retry_id(latest or task_id))
            if attempt is None:
                break
            latest = attempt.task_id
    except CorruptRecord:
        return None
    return task if latest is None else task.evolve(latest_attempt_id=latest)
