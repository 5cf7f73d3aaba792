"""Cancel in the memory backend (issue 23), the reference behaviour the Redis and MongoDB ones follow.

Everything happens under the backend's one lock: the cancel reads the chain's pointer and moves its
latest attempt in one step, and ``spawn_retry`` (memory.py) refuses a chain whose latest attempt is
``cancelled``, so a retry spawned while a cancel runs is either cancelled by it or never spawned.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cogman.status import Status

if TYPE_CHECKING:
    from cogman.record import TaskRecord


class MemoryCancel:
    """The cancel primitives of :class:`~cogman.backends.memory.MemoryBackend`."""

    if TYPE_CHECKING:
        _records: dict[str, TaskRecord]
        _changed: threading.Condition

        def _expire(self) -> None: ...
        def _transition(self, task_id: str, status: Status) -> TaskRecord | None: ...

    def cancel(self, task_id: str) -> Status | None:
        with self._changed:
            self._expire()
            record = self._records.get(task_id)
            if record is None:
                return None
            latest_id = self._latest_of(record)
            latest = self._records.get(latest_id)
            before = Status.RETRY if latest is None else latest.status
            if not before.is_final:
                self._transition(latest_id, Status.CANCELLED)
            return before

    def cancelled_among(self, task_ids: Sequence[str]) -> list[str]:
        with self._changed:
            return [i for i in task_ids if (r := self._records.get(i)) is not None and r.status is Status.CANCELLED]

    def _chain_cancelled(self, original: TaskRecord) -> bool:
        """Lock held. Whether the chain of ``original`` was cancelled: its latest attempt is."""
        latest = self._records.get(self._latest_of(original))
        return latest is not None and latest.status is Status.CANCELLED

    def _latest_of(self, record: TaskRecord) -> str:
        original = self._records.get(record.original_task_id, record)
        return original.latest_attempt_id or original.task_id
