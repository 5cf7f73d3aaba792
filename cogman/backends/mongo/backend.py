"""MongoDB backend: one document per attempt, conditional single-document updates, no transactions.

Every status change is one ``find_one_and_update`` matching only the statuses the status machine lets
move to the new one (no replica set needed); writes that cannot reach the server are buffered and
replayed (:mod:`cogman.backends.outage`); ``wait`` polls, growing its interval. See docs/backends.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError

from cogman.backends import codec
from cogman.backends.base import UNSET, Started, StatusBucket, TaskPage, TaskQuery
from cogman.backends.mongo import go_records as mongo_go
from cogman.backends.mongo import limiting
from cogman.backends.mongo import oldest as mongo_oldest
from cogman.backends.mongo import queries as mongo_queries
from cogman.backends.mongo import schema as mongo_schema
from cogman.backends.mongo import unique as mongo_unique
from cogman.backends.mongo.cancel import NOT_CANCELLED, MongoCancel
from cogman.backends.mongo.connect import is_transient, mock_client
from cogman.backends.mongo.go_records import MongoGoRecords
from cogman.backends.mongo.workers import MongoOperations
from cogman.backends.mongo.workflows import MongoWorkflows
from cogman.backends.outage import WriteBuffer
from cogman.errors import CorruptRecord
from cogman.record import TaskRecord
from cogman.status import UNCONFIRMED, Status, allows

if TYPE_CHECKING:
    from cogman.config.settings import Config

log = logging.getLogger("cogman.backends.mongo")


class MongoBackend(MongoCancel, MongoOperations, MongoWorkflows):
    """The MongoDB task log in ``config.mongo_database``.``config.mongo_collection``."""

    def __init__(self, url: str, config: Config, *, retry_seconds: float = 2.0, max_buffered: int = 100_000) -> None:
        self.ttl_seconds = int(config.mongo_ttl)
        if url.startswith("mongomock://"):
            self.client = mock_client(url)
        else:
            defaults = {"serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 2000, "socketTimeoutMS": 10_000}
            chosen: dict[str, Any] = {k: v for k, v in defaults.items() if k.lower() not in url.lower()}
            self.client = pymongo.MongoClient(url, tz_aware=True, appname="cogman", **chosen)
        self.collection = self.client[config.mongo_database][config.mongo_collection]
        #: Statuses that arrived before their record (a create still parked in another process).
        self.early = self.client[config.mongo_database][f"{config.mongo_collection}_early"]
        self.where = f"{config.mongo_database}.{config.mongo_collection}"
        self.buffer = WriteBuffer(
            f"MongoDB {self.where}", is_transient, retry_seconds=retry_seconds, max_pending=max_buffered
        )
        self.indexes_made = mongo_schema.IndexesMade()
        try:
            self.buffer.call(self.ensure_indexes, "create indexes")
        except ConnectionError as exc:
            log.warning("%s; indexes will be created before the first write", exc)

    def __repr__(self) -> str:
        return f"<MongoBackend {self.where}>"

    def key(self, task_id: str) -> str:
        return mongo_schema.record_key(self.where, task_id)

    # Writes

    def create(self, records: Sequence[TaskRecord], *, meanwhile: Callable[[], object] | None = None) -> bool:
        durable = self._create(records)
        if meanwhile is not None:
            meanwhile()
        return durable

    def _create(self, records: Sequence[TaskRecord]) -> bool:
        if not records:
            return True
        ids = ", ".join(r.task_id for r in records[:3]) + (" ..." if len(records) > 3 else "")

        def insert() -> bool:
            self._insert(records)
            return True

        return self.buffer.write(insert, f"create {len(records)} record(s) ({ids})") is not None

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
        changes: dict[str, Any] = {"status": status.value, **mongo_schema.updated()}
        changes[f"at.{status.value}"] = changes["updated_us"]
        if fail_error is not None:
            changes["fail_error"] = fail_error
        if traceback is not None:
            changes["traceback"] = traceback
        if duration is not None:
            changes["duration"] = duration
        if result is not UNSET:
            changes["result"] = codec.dumps(result)
        allowed = [s.value for s in Status if allows(s, status)]

        def move() -> dict[str, Any]:
            self._indexes()
            doc = self.collection.find_one_and_update(
                {"task_id": task_id, "status": {"$in": allowed}},
                {"$set": changes},
                projection={"_id": False},
                return_document=ReturnDocument.AFTER,
            )
            doc = doc or self.collection.find_one({"task_id": task_id}, {"_id": False})
            if doc is None:
                mongo_schema.keep_early(self.collection, self.early, task_id, status, changes)
                return {}
            return dict(doc)

        doc = self.buffer.write(move, f"move task {task_id} to {status}")
        if not doc:
            return None
        try:
            return codec.from_document(doc, self.key(task_id))
        except CorruptRecord as exc:
            log.error("task %s moved to %s over an unreadable record: %s", task_id, status, exc)
            return None

    def transition_many(self, task_ids: Sequence[str], status: Status) -> None:
        if not task_ids:
            return
        allowed = [s.value for s in Status if allows(s, status)]
        ids = list(task_ids)
        changes = {"status": status.value, **mongo_schema.updated()}
        changes[f"at.{status.value}"] = changes["updated_us"]

        def move() -> None:
            self._indexes()
            self.collection.update_many({"task_id": {"$in": ids}, "status": {"$in": allowed}}, {"$set": changes})

        self.buffer.write(move, f"move {len(ids)} task(s) to {status}")

    def start(self, task_id: str, token: str = "") -> Started | None:
        record = self.transition(task_id, Status.IN_PROGRESS)
        if record is None:
            return None
        starts = 1
        if not record.status.is_final:
            again = {"_start_token": {"$ne": token}} if token else {}  # a call made again for one delivery
            counted = self.buffer.call(
                lambda: self.collection.find_one_and_update(
                    {"task_id": task_id, "status": Status.IN_PROGRESS.value, **again},
                    {"$inc": {"starts": 1}, "$set": {"_start_token": token}},
                    projection={"starts": True},  # mongomock loses a new field's $inc with "_id": False
                    return_document=ReturnDocument.AFTER,
                ),
                f"count a start of task {task_id}",
            )
            if counted is None and token:  # this delivery's start was counted already
                counted = self.buffer.call(
                    lambda: self.collection.find_one({"task_id": task_id}, {"starts": True}), f"read task {task_id}"
                )
            starts = int((counted or {}).get("starts") or 1)
        budget = record.retry
        if not record.is_original:
            doc = self.buffer.call(
                lambda: self.collection.find_one({"task_id": record.original_task_id}, {"retry": True}),
                f"read the retry budget of task {record.original_task_id}",
            )
            budget = doc.get("retry", 0) if doc else 0
        return Started(record.status, record.original_task_id, record.attempt, max(0, int(budget or 0)), starts)

    def durable(self, callback: Callable[[str | None], None]) -> None:
        self.buffer.durable(callback)

    def claim_stale(self, task_ids: Sequence[str], lease_seconds: float) -> list[str]:
        unconfirmed = [s.value for s in UNCONFIRMED]

        def claim() -> list[str]:
            now = time.time()
            claimed = []
            for task_id in task_ids:
                free = {"$or": [{"_lease": {"$exists": False}}, {"_lease": {"$lt": now}}]}
                found = self.collection.find_one_and_update(
                    {"task_id": task_id, "status": {"$in": unconfirmed}, **free},
                    {"$set": {"_lease": now + lease_seconds}},
                    projection={"_id": True},
                )
                if found is not None:
                    claimed.append(task_id)
            return claimed

        return self.buffer.call(claim, "claim stale records for re-enqueue")

    def renew_leases(self, task_ids: Sequence[str], lease_seconds: float) -> None:
        ids = list(task_ids)
        self.buffer.call(
            lambda: self.collection.update_many(
                {"task_id": {"$in": ids}}, {"$set": {"_lease": time.time() + lease_seconds}}
            ),
            "renew re-enqueue leases",
        )

    def spawn_retry(self, original_task_id: str, attempt: TaskRecord) -> int | None:
        def spawn() -> int | None:
            self._indexes()
            if self.collection.find_one({"task_id": attempt.task_id}, {"_id": True}) is not None:
                doc = self.collection.find_one({"task_id": original_task_id}, {"retry": True})
                return int(doc.get("retry", 0)) if doc else None
            doc = self.collection.find_one_and_update(
                {
                    "task_id": original_task_id,
                    "retry": {"$gt": 0},
                    "latest_attempt_id": {"$ne": attempt.task_id},
                    **NOT_CANCELLED,
                },
                {"$inc": {"retry": -1}, "$set": {"latest_attempt_id": attempt.task_id, **mongo_schema.updated()}},
                projection={"_id": False, "retry": True},
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:  # spent, unknown, or this very attempt was spawned by an earlier try of this call
                doc = self.collection.find_one({"task_id": original_task_id}, {"_id": False})
                if doc is None or doc.get("latest_attempt_id") != attempt.task_id:
                    return None
            self._insert([attempt])
            left = doc.get("retry")
            return left if isinstance(left, int) else None

        return self.buffer.call(spawn, f"spawn a retry of task {original_task_id}")

    # Reads

    def get(self, task_id: str) -> TaskRecord | None:
        doc = self.buffer.call(
            lambda: self.collection.find_one({"task_id": task_id}, {"_id": False}), f"read task {task_id}"
        )
        return self.go_records().read_as_task(task_id) if doc is None else mongo_go.as_task(doc, self.key(task_id))

    def go_records(self) -> MongoGoRecords:  # issue 22: Go-format tasks' records (go_records.py)
        return MongoGoRecords(self.collection, self.buffer, self.ttl_seconds)

    def limits(self) -> limiting.MongoLimits:  # rate limits and concurrency slots (limiting.py)
        return limiting.store_of(self)

    def wait(self, task_id: str, timeout: float) -> TaskRecord | None:
        """Polls: a standalone MongoDB has no change streams. Every 20 ms at first, growing to 1 s."""
        deadline = time.monotonic() + timeout
        interval = 0.02
        while True:
            record = self.get(task_id)
            remaining = deadline - time.monotonic()
            if (record is not None and record.status.is_final) or remaining <= 0:
                return record
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, 1.0)

    def query(self, query: TaskQuery) -> TaskPage:
        return mongo_queries.query(self.collection, self.buffer, self.where, query)

    def count_by_status(self, start: datetime, end: datetime, bucket_seconds: float) -> list[StatusBucket]:
        return mongo_queries.count_by_status(self.collection, self.buffer, start, end, bucket_seconds)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until writes buffered during an outage are replayed."""
        return self.buffer.flush(timeout)

    def close(self) -> None:
        self.buffer.close()
        if not isinstance(self.client, pymongo.MongoClient):
            return  # a shared mongomock client stays readable, like a server
        self.client.close()

    def ensure_indexes(self) -> None:
        mongo_schema.ensure_indexes(self.collection, self.early, self.ttl_seconds, self.where)
        self.indexes_made.tasks = True

    # Helpers

    def _indexes(self) -> None:
        if not self.indexes_made.tasks:
            self.ensure_indexes()

    def _insert(self, records: Sequence[TaskRecord]) -> None:
        """Insert if absent: a record that exists already (a replayed insert) is left as it stands. Then
        apply the statuses that arrived before their record."""
        self._indexes()
        docs = [codec.to_document(r) for r in records]
        try:
            self.collection.insert_many([dict(d) for d in docs], ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise
        mongo_schema.apply_early(self.collection, self.early, [doc["task_id"] for doc in docs])

    create_unique = mongo_unique.create_unique
    oldest_queued = mongo_oldest.oldest_queued
