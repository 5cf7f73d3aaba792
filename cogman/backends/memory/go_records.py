"""Go-format task records in process (issue 22): the memory backend's ``go_records()``, the reference
behaviour for the Redis one. Records are kept as Go's JSON text (each write encodes, each read decodes,
as through Redis), forgotten ``ttl`` after their last write, and every change runs under one lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from cogman.backends.memory.fidelity import Deadlines
from cogman.gowire.record import GoRecord, go_time, parse_go_time
from cogman.gowire.store import MAX_LISTED, GoStarted, read_as_task, updated
from cogman.record import TaskRecord, utcnow
from cogman.status import Status


class MemoryGoRecords:
    """Go records in a dict of JSON strings; implements :class:`cogman.gowire.store.GoRecords`."""

    def __init__(
        self, ttl: float, clock: Callable[[], float] = time.monotonic, changed: threading.Condition | None = None
    ) -> None:
        self._records: dict[str, str] = {}
        #: Starts of tasks not final yet (``start``) and the delivery last counted, dropped when their
        #: record turns final.
        self._starts: dict[str, tuple[int, str]] = {}
        self._ttl = Deadlines(ttl, clock)
        #: The memory backend's condition (re-entrant), notified when a record becomes final, so its
        #: ``wait`` wakes for Go records too.
        self._lock = changed if changed is not None else threading.Condition()

    def create(self, record: GoRecord) -> bool:
        with self._lock:
            self._expire()
            if record.task_id in self._records:
                return False
            self._put(record)
            return True

    def update(
        self, task_id: str, status: Status, *, fail_error: str | None = None, duration: float | None = None
    ) -> GoRecord | None:
        with self._lock:
            current = self._read(task_id)
            if current is None:
                return None
            moved = updated(current, status, fail_error, duration)
            if moved is None:
                return current
            self._put(moved)
            if moved.status.is_final:
                self._starts.pop(task_id, None)
                self._lock.notify_all()
            return moved

    def start(self, task_id: str, token: str) -> GoStarted:
        with self._lock:
            record = self.update(task_id, Status.IN_PROGRESS)
            if record is not None and record.status.is_final:
                return GoStarted(record, 0)
            counted, last = self._starts.get(task_id, (0, ""))
            starts = counted if token and token == last else counted + 1
            self._starts[task_id] = (starts, token)
            return GoStarted(record, starts)

    def take_retry(self, original_task_id: str) -> int | None:
        with self._lock:
            current = self._read(original_task_id)
            if current is None or current.retry <= 0:
                return None
            self._put(current.evolve(retry=current.retry - 1, updated_at=go_time()))
            return current.retry - 1

    def add_retries(self, task_id: str, count: int) -> int | None:
        with self._lock:
            current = self._read(task_id)
            if current is None:
                return None
            self._put(current.evolve(retry=current.retry + count, updated_at=go_time()))
            return current.retry + count

    def delete(self, task_ids: Sequence[str]) -> None:
        with self._lock:
            for task_id in task_ids:
                self._records.pop(task_id, None)
                self._starts.pop(task_id, None)

    def get(self, task_id: str) -> GoRecord | None:
        with self._lock:
            return self._read(task_id)

    def recent(self, names: frozenset[str] = frozenset()) -> list[GoRecord]:
        with self._lock:
            self._expire()
            records = [GoRecord.from_json(raw, key) for key, raw in self._records.items()]
        return sorted(records, key=_created, reverse=True)[:MAX_LISTED]

    def read_as_task(self, task_id: str) -> TaskRecord | None:
        """The Go record as cogman's readers show it (the memory backend's ``get`` falls back to it)."""
        return read_as_task(self, task_id)

    def raw(self, task_id: str) -> str | None:
        """The JSON text as stored (for tests comparing it with Go's)."""
        with self._lock:
            self._expire()
            return self._records.get(task_id)

    def _read(self, task_id: str) -> GoRecord | None:
        self._expire()
        raw = self._records.get(task_id)
        return None if raw is None else GoRecord.from_json(raw, task_id)

    def _put(self, record: GoRecord) -> None:
        self._records[record.task_id] = record.to_json()
        self._ttl.touch(record.task_id)

    def _expire(self) -> None:
        for task_id in self._ttl.expired():
            self._records.pop(task_id, None)


def _created(record: GoRecord) -> datetime:
    """When the record was created, for listing newest first (a record Go wrote with no time: now)."""
    return parse_go_time(record.created_at) if record.created_at else utcnow()
