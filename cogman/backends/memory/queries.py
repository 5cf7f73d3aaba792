"""The memory backend's reads over many records: listing, counting per status, the oldest waiting in
``queued``. Each is an in-process pass over the records, which the TTL bounds (the stores shared by
processes read indexes instead: redis/queries.py, redis/oldest.py, mongo/queries.py, mongo/oldest.py)."""

from __future__ import annotations

import heapq
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from cogman.backends.base import StatusBucket, TaskPage, TaskQuery, buckets_from_counts
from cogman.backends.memory.fidelity import handed_out
from cogman.status import Status

if TYPE_CHECKING:
    import threading

    from cogman.record import TaskRecord


class MemoryStore(Protocol):
    _changed: threading.Condition
    _records: dict[str, TaskRecord]

    def _expire(self) -> None: ...


def query(backend: MemoryStore, query: TaskQuery) -> TaskPage:
    """``Backend.query`` in memory."""
    with backend._changed:
        backend._expire()
        matching = [r for r in backend._records.values() if query.matches(r)]
    matching.sort(key=lambda r: r.created_at, reverse=True)
    page = [handed_out(r) for r in matching[query.skip : query.skip + query.limit]]
    return TaskPage(records=page, total=len(matching))


def count_by_status(backend: MemoryStore, start: datetime, end: datetime, bucket_seconds: float) -> list[StatusBucket]:
    """``Backend.count_by_status`` in memory."""
    if bucket_seconds <= 0:
        raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds}")
    with backend._changed:
        backend._expire()
        records = [r for r in backend._records.values() if start <= r.created_at <= end]
    buckets: dict[int, dict[Status, int]] = {}
    for record in records:
        index = int((record.created_at - start).total_seconds() // bucket_seconds)
        counts = buckets.setdefault(index, {})
        counts[record.status] = counts.get(record.status, 0) + 1
    return buckets_from_counts(start, bucket_seconds, buckets)


def oldest_queued(backend: MemoryStore, limit: int) -> list[TaskRecord]:
    """``Backend.oldest_queued`` in memory."""
    with backend._changed:
        backend._expire()
        queued = (r for r in backend._records.values() if r.status is Status.QUEUED)
        oldest = heapq.nsmallest(max(0, limit), queued, key=lambda r: (r.created_at, r.task_id))
    return [handed_out(record) for record in oldest]
