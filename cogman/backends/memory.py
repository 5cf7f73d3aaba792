"""In-process backend: the embedded default and the reference behaviour for the real backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from cogman.backends.base import UNSET, Started, StatusBucket, TaskPage, TaskQuery, buckets_from_counts
from cogman.record import TaskRecord, utcnow
from cogman.status import UNCONFIRMED, Status, allows


class MemoryBackend:
    """Records in a dict behind one lock; a condition variable wakes ``wait`` when a task finishes."""

    def __init__(self) -> None:
        self._records: dict[str, TaskRecord] = {}
        self._leases: dict[str, float] = {}
        #: Changes that arrived before their record, applied by its create (the reference behaviour).
        self._early: dict[str, dict[str, Any]] = {}
        self._changed = threading.Condition()
        self._heartbeats: dict[str, tuple[dict[str, Any], float]] = {}
        self._chords: dict[str, dict[int, str]] = {}

    def create(self, records: Sequence[TaskRecord], *, meanwhile: Callable[[], object] | None = None) -> bool:
        self._store(records)
        if meanwhile is not None:
            meanwhile()
        return True

    def _store(self, records: Sequence[TaskRecord]) -> None:
        with self._changed:
            for record in records:
                if record.task_id in self._records:
                    continue
                early = self._early.pop(record.task_id, None)
                if early is not None and allows(record.status, early["status"]):
                    moved = (*record.history, (early["status"], early["updated_at"]))
                    record = record.evolve(**early, history=moved)
                self._records[record.task_id] = record
                if record.status.is_final:
                    self._changed.notify_all()

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
        return moved if returning else None

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
            changes["result"] = result
        with self._changed:
            record = self._records.get(task_id)
            if record is None:
                early = self._early.get(task_id)
                if early is None or allows(early["status"], status):
                    self._early[task_id] = changes
                return None
            if not allows(record.status, status):
                return record
            history = (*record.history, (status, changes["updated_at"]))
            record = self._records[task_id] = record.evolve(**changes, history=history)
            if status.is_final:
                self._changed.notify_all()
            return record

    def transition_many(self, task_ids: Sequence[str], status: Status) -> None:
        for task_id in task_ids:
            self.transition(task_id, status)

    def start(self, task_id: str) -> Started | None:
        with self._changed:
            record = self.transition(task_id, Status.IN_PROGRESS)
            if record is None:
                return None
            original = self._records.get(record.original_task_id, record)
            return Started(record.status, record.original_task_id, record.attempt, original.retry)

    def spawn_retry(self, original_task_id: str, attempt: TaskRecord) -> int | None:
        with self._changed:
            original = self._records.get(original_task_id)
            if original is not None and attempt.task_id in self._records:
                return original.retry
            if original is None or original.retry <= 0:
                return None
            left = original.retry - 1
            self._records[original_task_id] = original.evolve(
                retry=left, latest_attempt_id=attempt.task_id, updated_at=utcnow()
            )
            self._records[attempt.task_id] = attempt
            return left

    def durable(self, callback: Callable[[str | None], None]) -> None:
        """Every write is in the dict as soon as it returns."""
        callback(None)

    def claim_stale(self, task_ids: Sequence[str], lease_seconds: float) -> list[str]:
        now = time.time()
        claimed = []
        with self._changed:
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
            return self._records.get(task_id)

    def wait(self, task_id: str, timeout: float) -> TaskRecord | None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                record = self._records.get(task_id)
                remaining = deadline - time.monotonic()
                if (record is not None and record.status.is_final) or remaining <= 0:
                    return record
                self._changed.wait(remaining)

    def query(self, query: TaskQuery) -> TaskPage:
        with self._changed:
            matching = [r for r in self._records.values() if query.matches(r)]
        matching.sort(key=lambda r: r.created_at, reverse=True)
        return TaskPage(records=matching[query.skip : query.skip + query.limit], total=len(matching))

    def count_by_status(self, start: datetime, end: datetime, bucket_seconds: float) -> list[StatusBucket]:
        if bucket_seconds <= 0:
            raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds}")
        with self._changed:
            records = [r for r in self._records.values() if start <= r.created_at <= end]
        buckets: dict[int, dict[Status, int]] = {}
        for record in records:
            index = int((record.created_at - start).total_seconds() // bucket_seconds)
            counts = buckets.setdefault(index, {})
            counts[record.status] = counts.get(record.status, 0) + 1
        return buckets_from_counts(start, bucket_seconds, buckets)

    def close(self) -> None:
        """Nothing to release; records stay readable."""

    # Operator actions and worker heartbeats

    def add_retries(self, task_id: str, count: int) -> int | None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        with self._changed:
            record = self._records.get(task_id)
            if record is None:
                return None
            record = self._records[task_id] = record.evolve(retry=record.retry + count, updated_at=utcnow())
            return record.retry

    def record_heartbeat(self, worker_id: str, info: dict[str, Any], ttl: float) -> None:
        with self._changed:
            self._heartbeats[worker_id] = (dict(info), time.monotonic() + ttl)

    def live_workers(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        with self._changed:
            for worker_id in [w for w, (_, expires) in self._heartbeats.items() if expires <= now]:
                del self._heartbeats[worker_id]
            return [dict(info) for info, _ in self._heartbeats.values()]

    def forget_worker(self, worker_id: str) -> None:
        with self._changed:
            self._heartbeats.pop(worker_id, None)

    # Forgetting

    def delete(self, task_ids: Sequence[str]) -> None:
        with self._changed:
            for task_id in task_ids:
                self._records.pop(task_id, None)
                self._early.pop(task_id, None)
                self._leases.pop(task_id, None)

    # Workflows and periodic tasks

    def create_new(self, record: TaskRecord) -> bool:
        with self._changed:
            if record.task_id in self._records:
                return False
            self.create([record])
            return True

    def join_chord(self, chord_id: str, index: int, size: int, outcome: str) -> list[str] | None:
        if not 0 <= index < size:
            raise ValueError(f"chord member index {index} is outside 0..{size - 1}")
        with self._changed:
            outcomes = self._chords.setdefault(chord_id, {})
            outcomes.setdefault(index, outcome)
            return [outcomes[i] for i in range(size)] if len(outcomes) >= size else None
