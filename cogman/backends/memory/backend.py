"""In-process backend: the embedded default and the reference behaviour for the real backends.

It answers as Redis does wherever a test could tell: each record goes through Redis's field encoding
(``codec.py``) on its way in, so a tuple result comes back a list and ``{1: "a", "1": "b"}`` comes back
``{"1": "b"}``, a value JSON cannot carry raises ``TypeError`` at the write, and every read hands out a
copy its caller may change. It is bounded as Redis is, so a long-running process does not grow: a
record is forgotten ``ttl`` (``Config.redis_ttl``) after its last change, a status that arrived before
its record after an hour, a chord's set once its callback is sent (else ``ttl`` after its last join).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from cogman.backends import codec
from cogman.backends.base import UNSET, Started
from cogman.backends.memory import limits as memory_limits
from cogman.backends.memory import queries as memory_queries
from cogman.backends.memory import unique as memory_unique
from cogman.backends.memory.cancel import MemoryCancel
from cogman.backends.memory.fidelity import Deadlines, handed_out, sent, stored
from cogman.backends.memory.go_records import MemoryGoRecords
from cogman.backends.memory.workers import Heartbeats
from cogman.backends.memory.workflows import MemoryWorkflows
from cogman.backends.redis.scripts import EARLY_TTL_MS
from cogman.record import TaskRecord, utcnow
from cogman.status import UNCONFIRMED, Status, allows

#: ``Config.redis_ttl``'s default, for a backend made without a config.
DEFAULT_TTL = 7 * 24 * 3600.0


class MemoryBackend(MemoryCancel, MemoryWorkflows):
    """Records in a dict behind one lock; a condition variable wakes ``wait`` when a task finishes.
    ``clock`` (seconds, monotonic) times the expiry: a test passes its own to age records at once."""

    def __init__(self, ttl: float = DEFAULT_TTL, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._records: dict[str, TaskRecord] = {}
        self._leases: dict[str, float] = {}
        #: Starts of records not final yet (``Started.starts``), forgotten with their record.
        self._starts: dict[str, tuple[int, str]] = {}  # and the delivery (``start``'s token) last counted
        #: Changes that arrived before their record, applied by its create (the reference behaviour).
        self._early: dict[str, dict[str, Any]] = {}
        self._changed = threading.Condition()
        #: task id -> what ``on_final`` calls when its record turns final.
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self._heartbeats = Heartbeats()
        #: chord id -> (its callback's id, member index -> outcome).
        self._chords: dict[str, tuple[str, dict[int, str]]] = {}
        #: callback id -> chord id: the chord's set is dropped once its callback is sent.
        self._callbacks: dict[str, str] = {}
        self._record_ttl = Deadlines(ttl, clock)
        self._early_ttl = Deadlines(EARLY_TTL_MS / 1000, clock)
        self._chord_ttl = Deadlines(ttl, clock)
        self._go = MemoryGoRecords(ttl, clock, self._changed)
        self._unique = memory_unique.UniqueKeys()

    def create(self, records: Sequence[TaskRecord], *, meanwhile: Callable[[], object] | None = None) -> bool:
        self._store([stored(record) for record in records])
        if meanwhile is not None:
            meanwhile()
        return True

    def _store(self, records: Sequence[TaskRecord]) -> None:
        with self._changed:
            self._expire()
            for record in records:
                if record.task_id in self._records:
                    continue
                early = self._early.pop(record.task_id, None)
                self._early_ttl.discard(record.task_id)
                if early is not None and allows(record.status, early["status"]):
                    moved = (*record.history, (early["status"], early["updated_at"]))
                    record = record.evolve(**early, history=moved)
                self._put(record)
                if record.task_id in self._callbacks and sent(record):  # the chord's outcome is decided
                    chord_id = self._callbacks.pop(record.task_id)
                    self._chords.pop(chord_id, None)
                    self._chord_ttl.discard(chord_id)
                if record.status.is_final:
                    self._changed.notify_all()
                    self._tell_watchers(record.task_id)

    def _put(self, record: TaskRecord) -> None:
        """Lock held. Each write keeps the record ``ttl`` longer, as Redis's ``PEXPIRE`` on each change."""
        self._records[record.task_id] = record
        self._record_ttl.touch(record.task_id)

    def _expire(self) -> None:
        """Lock held. Forget what outlived its TTL, oldest first: each call costs what it removes."""
        for task_id in self._record_ttl.expired():
            self._records.pop(task_id, None)
            self._leases.pop(task_id, None)
            self._starts.pop(task_id, None)
        for task_id in self._early_ttl.expired():
            self._early.pop(task_id, None)
        for chord_id in self._chord_ttl.expired():
            callback, _ = self._chords.pop(chord_id, ("", {}))
            self._callbacks.pop(callback, None)

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
        moved = self._transition(
            task_id, status, fail_error=fail_error, traceback=traceback, result=result, duration=duration
        )
        return handed_out(moved) if returning and moved is not None else None

    def _transition(
        self,
        task_id: str,
        status: Status,
        *,
        fail_error: str | None = None,
        traceback: str | None = None,
        result: Any = UNSET,
        duration: float | None = None,
    ) -> TaskRecord | None:
        changes: dict[str, Any] = {"status": status, "updated_at": utcnow()}
        if fail_error is not None:
            changes["fail_error"] = fail_error
        if traceback is not None:
            changes["traceback"] = traceback
        if duration is not None:
            changes["duration"] = duration
        if result is not UNSET:
            changes["result"] = json.loads(codec.dumps(result))  # what Redis would give back
        with self._changed:
            self._expire()
            record = self._records.get(task_id)
            if record is None:
                early = self._early.get(task_id)
                if early is None or allows(early["status"], status):
                    self._early[task_id] = changes
                    self._early_ttl.touch(task_id)
                return None
            if not allows(record.status, status):
                return record
            history = (*record.history, (status, changes["updated_at"]))
            record = record.evolve(**changes, history=history)
            self._put(record)
            if status.is_final:
                self._starts.pop(task_id, None)
                self._changed.notify_all()
                self._tell_watchers(task_id)
            return record

    def transition_many(self, task_ids: Sequence[str], status: Status) -> None:
        for task_id in task_ids:
            self._transition(task_id, status)

    def start(self, task_id: str, token: str = "") -> Started | None:
        with self._changed:
            record = self._transition(task_id, Status.IN_PROGRESS)
            if record is None:
                return None
            original = self._records.get(record.original_task_id, record)
            starts = 1
            if not record.status.is_final:
                counted, last = self._starts.get(task_id, (0, ""))
                starts = counted if token and token == last else counted + 1
                self._starts[task_id] = (starts, token)
            return Started(record.status, record.original_task_id, record.attempt, original.retry, starts)

    def spawn_retry(self, original_task_id: str, attempt: TaskRecord) -> int | None:
        attempt = stored(attempt)
        with self._changed:
            self._expire()
            original = self._records.get(original_task_id)
            if original is not None and attempt.task_id in self._records:
                return original.retry
            if original is None or original.retry <= 0 or self._chain_cancelled(original):
                return None
            left = original.retry - 1
            self._put(original.evolve(retry=left, latest_attempt_id=attempt.task_id, updated_at=utcnow()))
            self._put(attempt)
            return left

    def durable(self, callback: Callable[[str | None], None]) -> None:
        """Every write is in the dict as soon as it returns."""
        callback(None)

    def claim_stale(self, task_ids: Sequence[str], lease_seconds: float) -> list[str]:
        now = time.time()
        claimed = []
        with self._changed:
            self._expire()
            for task_id in task_ids:
                record = self._records.get(task_id)
                if record is None or record.status not in UNCONFIRMED or self._leases.get(task_id, 0.0) > now:
                    continue
                self._leases[task_id] = now + lease_seconds
                claimed.append(task_id)
        return claimed

    def renew_leases(self, task_ids: Sequence[str], lease_seconds: float) -> None:
        until = time.time() + lease_seconds
        with self._changed:
            for task_id in task_ids:
                if task_id in self._records:
                    self._leases[task_id] = until

    def get(self, task_id: str) -> TaskRecord | None:
        with self._changed:
            self._expire()
            record = self._records.get(task_id)
        return self._go.read_as_task(task_id) if record is None else handed_out(record)

    def wait(self, task_id: str, timeout: float) -> TaskRecord | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self._expire()
                record = self._records.get(task_id) or self._go.read_as_task(task_id)
                remaining = deadline - time.monotonic()
                if (record is not None and record.status.is_final) or remaining <= 0:
                    return None if record is None else handed_out(record)
                self._changed.wait(remaining)

    def go_records(self) -> MemoryGoRecords:
        """Go-format task records (issue 22, cogman/backends/memory/go_records.py)."""
        return self._go

    def limits(self) -> memory_limits.MemoryLimits:  # rate limits and concurrency slots (memory_limits.py)
        return memory_limits.limits_of(self)

    def on_final(self, task_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` once ``task_id``'s record is final (at once if it is), from the writing
        thread with the lock held (short, never raising); returns what stops it. For ``get_async``."""
        with self._changed:
            record = self._records.get(task_id)
            if record is not None and record.status.is_final:
                callback()
            self._watchers.setdefault(task_id, []).append(callback)

        def stop() -> None:
            with self._changed:
                left = [w for w in self._watchers.pop(task_id, []) if w is not callback]
                if left:
                    self._watchers[task_id] = left

        return stop

    def _tell_watchers(self, task_id: str) -> None:
        for callback in self._watchers.get(task_id, ()):
            callback()

    query = memory_queries.query
    count_by_status = memory_queries.count_by_status

    def sizes(self) -> dict[str, int]:
        """How many entries each structure holds, expired ones dropped first: what a long-running
        process keeps (the bounds of docs/guarantees.md)."""
        with self._changed:
            self._expire()
            return {"records": len(self._records), "leases": len(self._leases), "early": len(self._early),
                    "starts": len(self._starts),
                    "chords": len(self._chords), "heartbeats": len(self._heartbeats)}  # fmt: skip

    def close(self) -> None:
        """Nothing to release; records stay readable."""

    # Operator actions and worker heartbeats

    def add_retries(self, task_id: str, count: int) -> int | None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        with self._changed:
            self._expire()
            record = self._records.get(task_id)
            if record is None:
                return None
            record = record.evolve(retry=record.retry + count, updated_at=utcnow())
            self._put(record)
            return record.retry

    def record_heartbeat(self, worker_id: str, info: dict[str, Any], ttl: float) -> None:
        self._heartbeats.record(worker_id, info, ttl)

    def live_workers(self) -> list[dict[str, Any]]:
        return self._heartbeats.live()

    def forget_worker(self, worker_id: str) -> None:
        self._heartbeats.forget(worker_id)

    # Forgetting

    def delete(self, task_ids: Sequence[str]) -> None:
        with self._changed:
            for task_id in task_ids:
                self._records.pop(task_id, None)
                self._record_ttl.discard(task_id)
                self._early.pop(task_id, None)
                self._early_ttl.discard(task_id)
                self._leases.pop(task_id, None)
                self._starts.pop(task_id, None)

    create_unique = memory_unique.create_unique
    oldest_queued = memory_queries.oldest_queued
