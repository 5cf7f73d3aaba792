"""The oldest records waiting in ``queued`` in the memory backend: an in-process pass over its records,
which the TTL bounds (the stores shared by processes read an index instead: redis/oldest.py, mongo/oldest.py)."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Protocol

from cogman.backends.memory_fidelity import handed_out
from cogman.status import Status

if TYPE_CHECKING:
    import threading

    from cogman.record import TaskRecord


class MemoryStore(Protocol):
    _changed: threading.Condition
    _records: dict[str, TaskRecord]

    def _expire(self) -> None: ...


def oldest_queued(backend: MemoryStore, limit: int) -> list[TaskRecord]:
    """``Backend.oldest_queued`` in memory."""
    with backend._changed:
        backend._expire()
        queued = (r for r in backend._records.values() if r.status is Status.QUEUED)
        oldest = heapq.nsmallest(max(0, limit), queued, key=lambda r: (r.created_at, r.task_id))
    return [handed_out(record) for record in oldest]
