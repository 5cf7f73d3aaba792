"""Several backends at once: every write goes to each, reads of one task come from the first.

``backend=["redis://...", "mongodb://..."]`` keeps Redis as the fast primary (status, results, wake-up)
and MongoDB as the long-lived, queryable log. The primary decides: its answers are returned and its
errors are raised. A secondary that fails is logged and skipped; it never fails the task. Queries come
from the first backend that can answer them (one that raises falls through to the next).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from cogman.backends.base import UNSET, Backend, Started, StatusBucket, TaskPage, TaskQuery, started_now
from cogman.errors import ConfigError
from cogman.gowire.store import GoRecords
from cogman.record import TaskRecord
from cogman.status import Status

log = logging.getLogger("cogman.backends.multi")

T = TypeVar("T")


class MultiBackend:
    def __init__(self, backends: Sequence[Backend]) -> None:
        if not backends:
            raise ConfigError("MultiBackend needs at least one backend")
        self.backends = list(backends)
        self.primary = self.backends[0]
        self.secondaries = self.backends[1:]

    def __repr__(self) -> str:
        return f"<MultiBackend {self.backends!r}>"

    # Writes: the primary's outcome is the answer; secondaries follow, best effort

    def create(self, records: Sequence[TaskRecord], *, meanwhile: Callable[[], object] | None = None) -> bool:
        durable = self.primary.create(records, meanwhile=meanwhile)
        self._mirror(lambda b: b.create(records), f"create {len(records)} record(s)")
        return durable

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
        changes: dict[str, Any] = {
            "fail_error": fail_error,
            "traceback": traceback,
            "result": result,
            "duration": duration,
        }
        record = self.primary.transition(task_id, status, **changes, returning=returning)
        self._mirror(
            lambda b: b.transition(task_id, status, **changes),
            f"move task {task_id} to {status}",
        )
        return record

    def transition_many(self, task_ids: Sequence[str], status: Status) -> None:
        self.primary.transition_many(task_ids, status)
        self._mirror(lambda b: b.transition_many(task_ids, status), f"move {len(task_ids)} task(s) to {status}")

    def start_soon(self, task_id: str, token: str = "") -> Callable[[], Started | None]:
        return started_now(self.start(task_id, token))

    def start(self, task_id: str, token: str = "") -> Started | None:
        started = self.primary.start(task_id, token)
        self._mirror(lambda b: b.transition(task_id, Status.IN_PROGRESS), f"move task {task_id} to in_progress")
        return started

    def durable(self, callback: Callable[[str | None], None]) -> None:
        """The primary decides: a secondary that lags never holds an ack back."""
        self.primary.durable(callback)

    def claim_stale(self, task_ids: Sequence[str], lease_seconds: float) -> list[str]:
        return self.primary.claim_stale(task_ids, lease_seconds)

    def renew_leases(self, task_ids: Sequence[str], lease_seconds: float) -> None:
        self.primary.renew_leases(task_ids, lease_seconds)

    def spawn_retry(self, original_task_id: str, attempt: TaskRecord) -> int | None:
        left = self.primary.spawn_retry(original_task_id, attempt)
        if left is None:
            return None

        def follow(backend: Backend) -> None:
            # A secondary that missed earlier writes may think the budget is spent: the attempt is still
            # recorded there, since the primary decided it runs.
            if backend.spawn_retry(original_task_id, attempt) is None:
                backend.create([attempt])

        self._mirror(follow, f"record retry {attempt.task_id} of task {original_task_id}")
        return left

    # Reads

    def get(self, task_id: str) -> TaskRecord | None:
        return self.primary.get(task_id)

    def wait(self, task_id: str, timeout: float) -> TaskRecord | None:
        return self.primary.wait(task_id, timeout)

    def go_records(self) -> GoRecords:
        """The primary's: Go Cogman's processes read one store (docs/go-interop.md)."""
        return self.primary.go_records()

    def query(self, query: TaskQuery) -> TaskPage:
        return self._first(lambda b: b.query(query), "query")

    def count_by_status(self, start: datetime, end: datetime, bucket_seconds: float) -> list[StatusBucket]:
        if bucket_seconds <= 0:
            raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds}")
        return self._first(lambda b: b.count_by_status(start, end, bucket_seconds), "count")

    def close(self) -> None:
        for backend in self.backends:
            try:
                backend.close()
            except Exception:
                log.exception("closing %r failed", backend)

    # Helpers

    def _mirror(self, write: Callable[[Backend], object], what: str) -> None:
        for backend in self.secondaries:
            try:
                write(backend)
            except Exception:
                log.exception("secondary backend %r could not %s; the task goes on", backend, what)

    def _first(self, read: Callable[[Backend], T], what: str) -> T:
        error: Exception | None = None
        for backend in self.backends:
            try:
                return read(backend)
            except (NotImplementedError, ConnectionError) as exc:
                log.warning("%r cannot answer the %s (%s); asking the next backend", backend, what, exc)
                error = exc
        assert error is not None
        raise error

    # Operator actions and worker heartbeats: written to every backend, read from the first that answers

    def add_retries(self, task_id: str, count: int) -> int | None:
        budget = self.primary.add_retries(task_id, count)
        if budget is not None:
            self._mirror(lambda b: b.add_retries(task_id, count), f"add {count} retries to task {task_id}")
        return budget

    def record_heartbeat(self, worker_id: str, info: dict[str, Any], ttl: float) -> None:
        self.primary.record_heartbeat(worker_id, info, ttl)
        self._mirror(lambda b: b.record_heartbeat(worker_id, info, ttl), f"record the heartbeat of {worker_id}")

    def live_workers(self) -> list[dict[str, Any]]:
        return self._first(lambda b: b.live_workers(), "list of workers")

    def forget_worker(self, worker_id: str) -> None:
        self.primary.forget_worker(worker_id)
        self._mirror(lambda b: b.forget_worker(worker_id), f"forget worker {worker_id}")

    # Forgetting: from every backend, or a secondary would still list what the user forgot

    def delete(self, task_ids: Sequence[str]) -> None:
        self.primary.delete(task_ids)
        self._mirror(lambda b: b.delete(task_ids), f"delete {len(task_ids)} record(s)")

    # Workflows and periodic tasks: the primary decides; the secondaries get the record

    def create_new(self, record: TaskRecord) -> bool:
        created = self.primary.create_new(record)
        self._mirror(lambda b: b.create([record]), f"create task {record.task_id}")
        return created

    def join_chord(self, chord_id: str, index: int, size: int, outcome: str) -> list[str] | None:
        return self.primary.join_chord(chord_id, index, size, outcome)
