"""In-process backend: the embedded default and the reference behaviour for the real backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cogman.backends.base import UNSET, StatusBucket, TaskPage, TaskQuery, buckets_from_counts
from cogman.record import TaskRecord, utcnow
from cogman.status import Status, allows


class MemoryBackend:
    """Records in a dict behind one lock; a condition variable wakes ``wait`` when a task finishes."""

    def __init__(self) -> None:
        self._records: dict[str, TaskRecord] = {}
        self._changed = threading.Condition()
        self._heartbeats: dict[str, tuple[dict[str, Any], float]] = {}

    def create(self, records: Sequence[TaskRecord]) -> None:
        with self._changed:
            for record in records:
                self._records[record.task_id] = record

    def transition(
        self,
        task_id: str,
        status: Status,
        *,
        fail_error: str | None = None,
        result: Any = UNSET,
        duration: float | None = None,
    ) -> TaskRecord | None:
        with self._changed:
            record = self._records.get(task_id)
            if record is None or not allows(record.status, status):
                return record
            changes: dict[str, Any] = {"status": status, "updated_at": utcnow()}
            if fail_error is not None:
                changes["fail_error"] = fail_error
            if duration is not None:
                changes["duration"] = duration
            if result is not UNSET:
                changes["result"] = result
            record = self._records[task_id] = record.evolve(**changes)
            if status.is_final:
                self._changed.notify_all()
            return record

    def transition_many(self, task_ids: Sequence[str], status: Status) -> None:
        for task_id in task_ids:
            self.transition(task_id, status)

    def spawn_retry(self, original_task_id: str, attempt: TaskRecord) -> int | None:
        with self._changed:
            original = self._records.get(original_task_id)
            if original is None or original.retry <= 0:
                return None
            left = original.retry - 1
            self._records[original_task_id] = original.evolve(
                retry=left, latest_attempt_id=attempt.task_id, updated_at=utcnow()
            )
            self._records[attempt.task_id] = attempt
            return left

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
