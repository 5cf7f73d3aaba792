"""Unique tasks in the memory backend: the holder check and the create under the backend's lock.

The reference behaviour of ``Backend.create_unique``: a key held by a send whose chain is not final
(its latest attempt, when it was retried) and whose ``unique_for`` has not run out answers with the
holder; otherwise the record is stored and takes the key. The held keys are bounded: entries whose
holder is gone or final are swept whenever the table doubles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from cogman.backends.memory.fidelity import stored

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence

    from cogman.backends.memory.fidelity import Deadlines
    from cogman.record import TaskRecord

#: Held keys kept before the first sweep of released ones.
FIRST_SWEEP = 1024


class MemoryStore(Protocol):
    """What of the memory backend this helper uses (the backend, declared here so nothing imports it)."""

    _changed: threading.Condition
    _records: dict[str, TaskRecord]
    _record_ttl: Deadlines
    _unique: UniqueKeys

    def _expire(self) -> None: ...
    def _store(self, records: Sequence[TaskRecord]) -> None: ...


class UniqueKeys:
    """key -> (holder task id, deadline on the backend's clock or None: until the chain is final)."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, float | None]] = {}
        self.sweep_at = FIRST_SWEEP


def create_unique(backend: MemoryStore, record: TaskRecord, key: str, hold_seconds: float | None) -> str | None:
    record = stored(record)
    clock = backend._record_ttl.clock
    keys: UniqueKeys = backend._unique
    with backend._changed:
        backend._expire()
        now = clock()
        held = keys.held.get(key)
        if held is not None and _holds(backend, held, now):
            return held[0]
        backend._store([record])
        keys.held[key] = (record.task_id, None if hold_seconds is None else now + hold_seconds)
        if len(keys.held) >= keys.sweep_at:
            keys.held = {k: h for k, h in keys.held.items() if _holds(backend, h, now)}
            keys.sweep_at = max(FIRST_SWEEP, 2 * len(keys.held))
    return None


def _holds(backend: MemoryStore, held: tuple[str, float | None], now: float) -> bool:
    """Lock held. The holder's chain is not final and its ``unique_for`` has not run out."""
    holder_id, deadline = held
    if deadline is not None and now >= deadline:
        return False
    holder = backend._records.get(holder_id)
    if holder is None:
        return False
    latest = holder.latest_attempt_id
    if latest and latest != holder_id:
        holder = backend._records.get(latest)
        if holder is None:
            return False
    return not holder.status.is_final
