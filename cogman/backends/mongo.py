"""MongoDB backend: one document per attempt, conditional single-document updates, no transactions.

Every status change is one ``find_one_and_update`` whose filter only matches the statuses the status
machine allows to move to the new one, so it works on a standalone server. Writes that cannot reach the
server are buffered and replayed (:mod:`cogman.backends.outage`). MongoDB has no notifications on a
standalone server, so ``wait`` polls with a growing interval. See docs/backends.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure, PyMongoError

from cogman.backends import codec
from cogman.backends.base import UNSET, Started, StatusBucket, TaskPage, TaskQuery, buckets_from_counts
from cogman.backends.outage import WriteBuffer
from cogman.errors import CorruptRecord
from cogman.record import TaskRecord, utcnow
from cogman.status import RANK, UNCONFIRMED, Status, allows

if TYPE_CHECKING:
    from cogman.config import Config

log = logging.getLogger("cogman.backends.mongo")

#: How long a status that arrived before its record is kept, waiting for the record's create.
EARLY_TTL_SECONDS = 3600


def is_transient(exc: BaseException) -> bool:
    """An unreachable server, a failover (not primary), or a write the driver labels retryable."""
    if isinstance(exc, ConnectionFailure):
        return True
    return isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError")


#: ``mongomock://NAME`` clients, shared per URL so two backends on one URL see the same data.
_MOCKS: dict[str, Any] = {}
_MOCKS_LOCK = threading.Lock()


def _mock_client(url: str) -> Any:
    import mongomock

    with _MOCKS_LOCK:
        if url not in _MOCKS:
            _MOCKS[url] = mongomock.MongoClient(tz_aware=True)
        return _MOCKS[url]


class MongoBackend:
    """The MongoDB task log in ``config.mongo_database``.``config.mongo_collection``."""

    def __init__(self, url: str, config: Config, *, retry_seconds: float = 2.0, max_buffered: int = 100_000) -> None:
        self.ttl_seconds = int(config.mongo_ttl)
        if url.startswith("mongomock://"):
            self.client = _mock_client(url)
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
        self._indexes_ready = False
        try:
            self.buffer.call(self.ensure_indexes, "create indexes")
        except ConnectionError as exc:
            log.warning("%s; indexes will be created before the first write", exc)

    def __repr__(self) -> str:
        return f"<MongoBackend {self.where}>"

    def key(self, task_id: str) -> str:
        return f"{self.where}[task_id={task_id}]"

    def ensure_indexes(self) -> None:
        """Create the indexes if missing; never drops one. A TTL that differs from the config is updated
        with collMod where the server allows it, else left as it is with a warning."""
        newest = [("created_at", pymongo.DESCENDING), ("created_us", pymongo.DESCENDING)]
        specs: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = [
            ("task_id_unique", [("task_id", pymongo.ASCENDING)], {"unique": True}),
            ("primary_key_created", [("primary_key", pymongo.ASCENDING), *newest], {}),
            ("status_created", [("status", pymongo.ASCENDING), *newest], {}),
            ("name_created", [("name", pymongo.ASCENDING), *newest], {}),
            ("created", newest, {}),
            ("created_at_ttl", [("created_at", pymongo.ASCENDING)], {"expireAfterSeconds": self.ttl_seconds}),
        ]
        if self.ttl_seconds <= 0:  # mongo_ttl=0: keep records for good
            specs.pop()
        self.early.create_index([("task_id", pymongo.ASCENDING)], name="task_id_unique", unique=True)
        self.early.create_index(
            [("created_at", pymongo.ASCENDING)], name="created_at_ttl", expireAfterSeconds=EARLY_TTL_SECONDS
        )
        for name, keys, options in specs:
            try:
                self.collection.create_index(keys, name=name, **options)
            except OperationFailure as exc:
                if name == "created_at_ttl":
                    self._update_ttl()
                else:
                    log.warning("index %s on %s left as it is: %s", name, self.where, exc)
        self._indexes_ready = True

    # Writes

    def create(self, records: Sequence[TaskRecord]) -> None:
        if not records:
            return
        ids = ", ".join(r.task_id for r in records[:3]) + (" ..." if len(records) > 3 else "")
        self.buffer.write(lambda: self._insert(records), f"create {len(records)} record(s) ({ids})")

    def transition(
        self,
        task_id: str,
        status: Status,
        *,
        fail_error: str | None = None,
        traceback: str | None = None,
        result: Any = UNSET,
        duration: float | None = None,
    ) -> TaskRecord | None:
        changes: dict[str, Any] = {"status": status.value, **self._updated()}
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
                self._keep_early(task_id, status, changes)
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
        changes = {"status": status.value, **self._updated()}
        changes[f"at.{status.value}"] = changes["updated_us"]

        def move() -> None:
            self._indexes()
            self.collection.update_many({"task_id": {"$in": ids}, "status": {"$in": allowed}}, {"$set": changes})

        self.buffer.write(move, f"move {len(ids)} task(s) to {status}")

    def start(self, task_id: str) -> Started | None:
        record = self.transition(task_id, Status.IN_PROGRESS)
        if record is None:
            return None
        budget = record.retry
        if not record.is_original:
            doc = self.buffer.call(
                lambda: self.collection.find_one({"task_id": record.original_task_id}, {"retry": True}),
                f"read the retry budget of task {record.original_task_id}",
            )
            budget = doc.get("retry", 0) if doc else 0
        return Started(record.status, record.original_task_id, record.attempt, max(0, int(budget or 0)))

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
                {"task_id": original_task_id, "retry": {"$gt": 0}, "latest_attempt_id": {"$ne": attempt.task_id}},
                {"$inc": {"retry": -1}, "$set": {"latest_attempt_id": attempt.task_id, **self._updated()}},
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
        return None if doc is None else codec.from_document(doc, self.key(task_id))

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
        match = codec.document_filter(query)

        def read() -> tuple[list[dict[str, Any]], int]:
            docs: list[dict[str, Any]] = []
            if query.limit > 0:
                cursor = self.collection.find(match, {"_id": False}).sort(
                    [("created_at", pymongo.DESCENDING), ("created_us", pymongo.DESCENDING)]
                )
                docs = list(cursor.skip(query.skip).limit(query.limit))
            return docs, self.collection.count_documents(match)

        docs, total = self.buffer.call(read, "query task records")
        records = []
        for doc in docs:
            try:
                records.append(codec.from_document(doc, self.key(str(doc.get("task_id")))))
            except CorruptRecord as exc:
                log.warning("query skipped %s", exc)
        return TaskPage(records=records, total=total)

    def count_by_status(self, start: datetime, end: datetime, bucket_seconds: float) -> list[StatusBucket]:
        if bucket_seconds <= 0:
            raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds}")
        origin = codec.to_us(start)
        match = codec.document_filter(TaskQuery(created_after=start, created_before=end))
        offset = {"$divide": [{"$subtract": ["$created_us", origin]}, 1_000_000]}
        pipeline = [
            {"$match": match},
            {
                "$group": {
                    "_id": {"status": "$status", "bucket": {"$floor": {"$divide": [offset, bucket_seconds]}}},
                    "n": {"$sum": 1},
                }
            },
        ]
        rows = self.buffer.call(lambda: list(self.collection.aggregate(pipeline)), "count task records")
        buckets: dict[int, dict[Status, int]] = {}
        for row in rows:
            try:
                status = Status(row["_id"]["status"])
            except ValueError:
                log.warning("count skipped %d record(s) with unknown status %r", row["n"], row["_id"]["status"])
                continue
            buckets.setdefault(int(row["_id"]["bucket"]), {})[status] = int(row["n"])
        return buckets_from_counts(start, bucket_seconds, buckets)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until writes buffered during an outage are replayed."""
        return self.buffer.flush(timeout)

    def close(self) -> None:
        self.buffer.close()
        if not isinstance(self.client, pymongo.MongoClient):
            return  # a shared mongomock client stays readable, like a server
        self.client.close()

    # Helpers

    def _indexes(self) -> None:
        if not self._indexes_ready:
            self.ensure_indexes()

    def _update_ttl(self) -> None:
        try:
            self.collection.database.command(
                {
                    "collMod": self.collection.name,
                    "index": {"name": "created_at_ttl", "expireAfterSeconds": self.ttl_seconds},
                }
            )
        except ConnectionFailure:
            raise
        except Exception as exc:  # mongomock has no collMod; a server may refuse it
            log.warning(
                "the TTL index of %s differs from mongo_ttl=%s and was left as it is: %s",
                self.where,
                self.ttl_seconds,
                exc,
            )
            return
        log.info("TTL index of %s set to %s s", self.where, self.ttl_seconds)

    @staticmethod
    def _updated() -> dict[str, Any]:
        now = utcnow()
        return {"updated_at": now, "updated_us": codec.to_us(now)}

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
        self._apply_early([doc["task_id"] for doc in docs])

    def _apply_early(self, ids: list[str]) -> None:
        for stub in list(self.early.find({"task_id": {"$in": ids}}, {"_id": False})):
            status = Status(stub.pop("status"))
            task_id = stub.pop("task_id")
            stub.pop("created_at", None)
            for name, moment in (stub.pop("at", None) or {}).items():
                stub[f"at.{name}"] = moment  # add to the record's history, never replace it
            allowed = [s.value for s in Status if allows(s, status)]
            self.collection.update_one(
                {"task_id": task_id, "status": {"$in": allowed}}, {"$set": {"status": status.value, **stub}}
            )
            self.early.delete_one({"task_id": task_id})

    def _keep_early(self, task_id: str, status: Status, changes: dict[str, Any]) -> None:
        """Keep a status whose record is not here yet (its create may be parked in another process),
        unless a higher one is kept already; the record's create applies it."""
        lower = [s.value for s in Status if RANK[s] < RANK[status]]
        stub = {**changes, "status": status.value}
        # A DuplicateKeyError means a higher status is kept already: this one loses, as the status machine says.
        with contextlib.suppress(pymongo.errors.DuplicateKeyError):
            self.early.update_one(
                {"task_id": task_id, "$or": [{"status": {"$in": lower}}, {"status": {"$exists": False}}]},
                {"$set": stub, "$setOnInsert": {"created_at": utcnow()}},
                upsert=True,
            )
        if self.collection.find_one({"task_id": task_id}, {"_id": True}) is not None:
            self._apply_early([task_id])  # the create landed meanwhile and may have missed the stub

    # Operator actions and worker heartbeats: a ``workers`` collection beside the tasks, one document per
    # worker (``_id`` = worker id, ``info`` = its JSON), removed by a TTL index on ``expires_at``.

    def add_retries(self, task_id: str, count: int) -> int | None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")

        def add() -> int | None:
            doc = self.collection.find_one_and_update(
                {"task_id": task_id},
                {"$inc": {"retry": count}, "$set": self._updated()},
                projection={"_id": False, "retry": True},
                return_document=ReturnDocument.AFTER,
            )
            budget = None if doc is None else doc.get("retry")
            return budget if isinstance(budget, int) else None

        return self.buffer.call(add, f"add {count} retries to task {task_id}")

    @property
    def workers(self) -> Any:
        return self.collection.database[WORKERS_COLLECTION]

    def record_heartbeat(self, worker_id: str, info: dict[str, Any], ttl: float) -> None:
        def write() -> None:
            if not getattr(self, "_workers_index_ready", False):
                self.workers.create_index(
                    [("expires_at", pymongo.ASCENDING)], name="expires_at_ttl", expireAfterSeconds=0
                )
                self._workers_index_ready = True
            expires = utcnow() + timedelta(seconds=ttl)
            doc = {"_id": worker_id, "info": codec.dumps(info), "expires_at": expires}
            self.workers.replace_one({"_id": worker_id}, doc, upsert=True)

        self.buffer.call(write, f"record the heartbeat of worker {worker_id}")

    def live_workers(self) -> list[dict[str, Any]]:
        # The TTL monitor runs once a minute: expired documents may linger, so the filter decides.
        docs = self.buffer.call(lambda: list(self.workers.find({"expires_at": {"$gt": utcnow()}})), "list the workers")
        workers = []
        for doc in docs:
            try:
                info = json.loads(doc["info"])
            except (KeyError, TypeError, ValueError):
                log.warning("skipping unreadable heartbeat of worker %s", doc.get("_id"))
                continue
            if isinstance(info, dict):
                workers.append(info)
        return workers

    def forget_worker(self, worker_id: str) -> None:
        self.buffer.call(lambda: self.workers.delete_one({"_id": worker_id}), f"forget worker {worker_id}")


WORKERS_COLLECTION = "workers"
