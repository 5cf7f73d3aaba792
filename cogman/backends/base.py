"""The backend protocol: how task records are stored, moved between states, waited on and queried.

A backend is a handful of primitives (Huey-style). Each one is a single atomic step on the store (one
Redis round trip, one conditional Mongo update), and each status change is checked by
:func:`cogman.status.allows`, so every backend enforces the same status machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cogman.gowire.store import GoRecords
from cogman.record import TaskRecord
from cogman.status import Status

UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class Started:
    """What a worker learns from the backend when it starts an attempt: the record's status after the
    move (``in_progress``, or a final status for a redelivery of a finished task), and the chain facts
    it must not take from the message body, which anyone able to publish could forge."""

    status: Status
    original_task_id: str
    attempt: int
    #: The chain's retry budget, read from the original attempt's record.
    retries_left: int
    #: How many times this attempt was started, this start included, while its record was not final:
    #: above 1, earlier runs ended without an outcome (their worker died). The worker stops running a
    #: task that keeps killing its worker (``Config.max_redeliveries``). 1 where a backend cannot count.
    starts: int = 1


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """Filters for listing records, newest first. Every filter is optional; ranges include both ends."""

    status: Status | None = None
    name: str | None = None
    primary_key: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    skip: int = 0
    limit: int = 50

    def __post_init__(self) -> None:
        if self.skip < 0 or self.limit < 0:
            raise ValueError(f"skip and limit must not be negative (skip={self.skip}, limit={self.limit})")

    def matches(self, record: TaskRecord) -> bool:
        return (
            (self.status is None or record.status == self.status)
            and (self.name is None or record.name == self.name)
            and (self.primary_key is None or record.primary_key == self.primary_key)
            and (self.created_after is None or record.created_at >= self.created_after)
            and (self.created_before is None or record.created_at <= self.created_before)
        )


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of a query and the total number of matching records."""

    records: list[TaskRecord]
    total: int


@dataclass(frozen=True, slots=True)
class StatusBucket:
    """Records created in ``[start, start + width)``, counted per status."""

    start: datetime
    counts: dict[Status, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def buckets_from_counts(
    start: datetime, bucket_seconds: float, counts: dict[int, dict[Status, int]]
) -> list[StatusBucket]:
    """StatusBuckets from counts keyed by bucket index (0 = the one starting at ``start``), in order."""
    return [
        StatusBucket(start=datetime.fromtimestamp(start.timestamp() + i * bucket_seconds, start.tzinfo), counts=c)
        for i, c in sorted(counts.items())
    ]


class Backend(Protocol):
    """Stores one record per attempt; see docs/backends.md for each implementation's layout."""

    def create(self, records: Sequence[TaskRecord], *, meanwhile: Callable[[], object] | None = None) -> bool:
        """Store new records (status ``initiated`` or ``retry``) in one round trip. Insert if absent: a
        replayed or repeated create never resets a record that moved on. True when the records are in
        the store now, False when the write was parked in memory (the store is unreachable).

        ``meanwhile`` runs once, after the write went out and before this returns; a backend that can
        (Redis) runs it while the store works, so the client's publish overlaps the create's round
        trip. Its exception propagates once the create is finished."""

    def transition(
        self,
        task_id: str,
        status: Status,
        *,
        fail_error: str | None = None,
        traceback: str | None = None,
        result: Any = UNSET,
        duration: float | None = None,
        returning: bool = True,
    ) -> TaskRecord | None:
        """Move one record to ``status`` if the status machine allows it, atomically, setting the given
        fields with it. Returns the record as it stands afterwards (moved or not), None if unknown;
        with ``returning=False`` always None (the worker's outcome writes need nothing back)."""

    def transition_many(self, task_ids: Sequence[str], status: Status) -> None:
        """The same move for many records in one round trip, for batch sends (no fields, no result)."""

    def start(self, task_id: str, token: str = "") -> Started | None:
        """Move the record to ``in_progress`` if allowed, in one round trip, and return what the worker
        needs; None when the record is unknown or the write had to be parked (store unreachable). Each
        delivery of a record that is not final counts one start (``Started.starts``), a redelivery of a
        task whose worker died mid-run included: ``token`` names the delivery, so the calls made again
        for it (retries and replays through an outage or a WAIT shortfall) count once. "" counts each
        call."""

    def start_soon(self, task_id: str, token: str = "") -> Callable[[], Started | None]:
        """:meth:`start`, sent now and read later: the returned function gives its result (and may be
        called again). A worker runs a first delivery's handler in between (cogman/worker/first_run.py);
        Redis pipelines it, the others write at once and hand the result back."""

    def spawn_retry(self, original_task_id: str, attempt: TaskRecord) -> int | None:
        """If the original's budget is above 0: decrement it, point the original's ``latest_attempt_id``
        at ``attempt`` and store ``attempt``, all atomically; return the budget left. Else None.
        Idempotent per attempt id: when ``attempt`` exists already, nothing changes and the budget left
        is returned (a redelivered failure spawns its retry once)."""

    def durable(self, callback: Callable[[str | None], None]) -> None:
        """``callback(None)`` once every write this process made so far is in the store (at once when
        none is parked), ``callback(reason)`` if one failed for good. The worker acks through it."""

    def claim_stale(self, task_ids: Sequence[str], lease_seconds: float) -> list[str]:
        """Of these records, atomically take a lease of ``lease_seconds`` on those still unconfirmed
        (``initiated`` or ``retry``) whose lease is free or expired; return the ids taken. Re-enqueue
        publishes only those, so N sweeping processes republish each stale record once."""

    def renew_leases(self, task_ids: Sequence[str], lease_seconds: float) -> None:
        """Hold a lease on records this process still has in its outbox, so no sweep republishes them."""

    def get(self, task_id: str) -> TaskRecord | None:
        """The record, or None. A record that is not cogman's raises CorruptRecord naming the key."""

    def wait(self, task_id: str, timeout: float) -> TaskRecord | None:
        """Block until the record is final (without polling where the store can notify), or until
        ``timeout``; return the record as it then stands."""

    def query(self, query: TaskQuery) -> TaskPage:
        """Records matching ``query``, newest first, with the total."""

    def count_by_status(self, start: datetime, end: datetime, bucket_seconds: float) -> list[StatusBucket]:
        """Counts per status of the records created in ``[start, end]``, in buckets; empty ones left out."""

    def close(self) -> None:
        """Release connections."""

    # Operator actions and worker heartbeats (issue 10)

    def add_retries(self, task_id: str, count: int) -> int | None:
        """Raise the retry budget on the record ``task_id`` by ``count`` (at least 1), atomically; return
        the new budget, None if the record is unknown. A manual retry raises it, then ``spawn_retry``."""

    def record_heartbeat(self, worker_id: str, info: dict[str, Any], ttl: float) -> None:
        """Store a worker's heartbeat (JSON-ready ``info``), forgotten ``ttl`` seconds after this write.
        Raises BackendUnavailable: a heartbeat is never buffered, a late one would lie."""

    def live_workers(self) -> list[dict[str, Any]]:
        """The heartbeats that have not expired, of every app using this store."""

    def forget_worker(self, worker_id: str) -> None:
        """Drop a stopping worker's heartbeat at once."""

    # Forgetting (``AsyncResult.forget``, issue 9)

    def delete(self, task_ids: Sequence[str]) -> None:
        """Remove these records and everything kept about them (index entries, wake-up tokens, statuses
        that arrived early, leases); unknown ids are ignored. Ordered after this process's earlier
        writes: a write parked during an outage cannot bring a deleted record back."""

    # Workflows and periodic tasks (issue 11)

    def create_new(self, record: TaskRecord) -> bool:
        """Store ``record`` if no record has its id, atomically, and say whether this call stored it. Of
        N processes creating the same record (beats claiming one periodic tick, workers firing one chord
        callback), exactly one gets True and publishes the message. Raises BackendUnavailable: a claim
        is never buffered. A call whose reply was lost and is retried gets False: the record then waits,
        unconfirmed, for the re-enqueue sweep to publish it."""

    def join_chord(self, chord_id: str, index: int, size: int, outcome: str) -> list[str] | None:
        """Store member ``index``'s outcome (JSON text) in the chord's set unless it has one (a redelivered
        member keeps the first), atomically with counting the set; once all ``size`` members are in,
        return every outcome in member order, else None. Every call that finds the set complete gets the
        list; the callback record's ``create_new`` decides which one sends the callback."""

    # Go Cogman's records (issue 22, docs/go-interop.md)

    def go_records(self) -> GoRecords:
        """Go-format task records, kept as Go Cogman keeps them (cogman/gowire/store.py). ``get`` and
        ``wait`` read one (converted) when no cogman record has the id."""


def started_now(started: Started | None) -> Callable[[], Started | None]:
    """``start_soon`` of a backend that writes the start at once: its result, handed back later."""
    return lambda: started
