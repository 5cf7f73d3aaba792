"""Workflows and periodic tasks in memory: the claim of a record (``create_new``) and a chord's set of
member outcomes, kept until the callback is sent or the chord's TTL passes (as on Redis)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cogman.backends.memory.fidelity import sent, stored

if TYPE_CHECKING:
    from cogman.backends.memory.fidelity import Deadlines
    from cogman.record import TaskRecord


class MemoryWorkflows:
    """:class:`~cogman.backends.memory.backend.MemoryBackend`'s workflow primitives."""

    if TYPE_CHECKING:
        _changed: threading.Condition
        _records: dict[str, TaskRecord]
        _chords: dict[str, tuple[str, dict[int, str]]]
        _callbacks: dict[str, str]
        _chord_ttl: Deadlines

        def _store(self, records: Sequence[TaskRecord]) -> None: ...
        def _expire(self) -> None: ...

    def create_new(self, record: TaskRecord) -> bool:
        record = stored(record)
        with self._changed:
            if record.task_id in self._records:
                return False
            self._store([record])
            return True

    def join_chord(self, chord_id: str, index: int, size: int, outcome: str) -> list[str] | None:
        from cogman.signature import callback_id  # a workflow concept; imported late, no import cycle

        if not 0 <= index < size:
            raise ValueError(f"chord member index {index} is outside 0..{size - 1}")
        callback = callback_id(chord_id)
        with self._changed:
            self._expire()
            if chord_id not in self._chords and callback in self._records and sent(self._records[callback]):
                return None  # decided and sent: a late member changes nothing (as on Redis)
            _, outcomes = self._chords.setdefault(chord_id, (callback, {}))
            self._callbacks[callback] = chord_id
            self._chord_ttl.touch(chord_id)
            outcomes.setdefault(index, outcome)
            return [outcomes[i] for i in range(size)] if len(outcomes) >= size else None
