"""Go-format task records in MongoDB (issue 22): the Mongo backend's ``go_records()``.

Go keeps its live records in Redis; a cogman process whose backend is MongoDB keeps the Go records of
the Go-format tasks it sends and runs in ``<collection>_go``, one document per attempt:
``{task_id, status, record}``, ``record`` being Go's JSON text byte for byte (cogman/gowire/record.py).
Each change is a compare-and-set on that text (``update_one`` matching the text it read), tried again
when another writer got in between, so no change is lost. ``created_at`` carries the TTL (``mongo_ttl``).
Go Cogman's own collection (``cogman.tasks``) is never written here; its indexes are left alone
(schema.py names cogman's indexes as Go names those on the same keys).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo.errors import DuplicateKeyError

from cogman.backends import codec
from cogman.errors import CorruptRecord
from cogman.gowire.record import GoRecord, go_time, parse_go_time
from cogman.gowire.store import MAX_LISTED, GoStarted, read_as_task, updated
from cogman.record import TaskRecord, utcnow
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.outage import WriteBuffer

#: Where Go Cogman keeps its documents (fixed in Go: database ``cogman``, collection ``tasks``).
GO_DATABASE, GO_COLLECTION = "cogman", "tasks"
#: How often a change is tried again when another writer changed the record in between.
CAS_TRIES = 50
_INDEXED: set[int] = set()
_INDEXED_LOCK = threading.Lock()


class MongoGoRecords:
    """Implements ``cogman.gowire.store.GoRecords`` beside the records' collection (``<name>_go``)."""

    def __init__(self, records: Any, buffer: WriteBuffer, ttl_seconds: int) -> None:
        self.collection = records.database[f"{records.name}_go"]
        #: Starts of Go tasks (``start``), by task id, with the delivery last counted: Go's record has no
        #: field for them.
        self.starts = records.database[f"{records.name}_go_starts"]
        self.buffer = buffer
        self.ttl_seconds = ttl_seconds

    def create(self, record: GoRecord) -> bool:
        def insert() -> bool:
            self._indexes()
            doc = {"task_id": record.task_id, "status": record.status.value, "record": record.to_json()}
            try:
                created = parse_go_time(record.created_at) if record.created_at else utcnow()  # TTL and listing
                self.collection.insert_one({**doc, "created_at": created})
            except DuplicateKeyError:
                return False
            return True

        return bool(self.buffer.write(insert, f"create Go record {record.task_id}"))

    def update(
        self, task_id: str, status: Status, *, fail_error: str | None = None, duration: float | None = None
    ) -> GoRecord | None:
        result: GoRecord | None = self.buffer.write(
            lambda: self._move(task_id, status, fail_error, duration), f"move Go task {task_id} to {status}"
        )
        return result

    def _move(self, task_id: str, status: Status, fail_error: str | None, duration: float | None) -> GoRecord | None:
        for _ in range(CAS_TRIES):
            current, raw = self._read(task_id)
            if current is None:
                return None
            moved = updated(current, status, fail_error, duration)
            if moved is None:
                return current
            if self._swap(task_id, raw, moved):
                return moved
        raise RuntimeError(f"Go record {task_id} kept changing under {CAS_TRIES} tries to move it to {status}")

    def take_retry(self, original_task_id: str) -> int | None:
        def take() -> int | None:
            for _ in range(CAS_TRIES):
                current, raw = self._read(original_task_id)
                if current is None or current.retry <= 0:
                    return None
                if self._swap(original_task_id, raw, current.evolve(retry=current.retry - 1, updated_at=go_time())):
                    return current.retry - 1
            raise RuntimeError(f"Go record {original_task_id} kept changing under {CAS_TRIES} tries")

        left: int | None = self.buffer.call(take, f"take a retry of Go task {original_task_id}")
        return left

    def add_retries(self, task_id: str, count: int) -> int | None:
        def add() -> int | None:
            for _ in range(CAS_TRIES):
                current, raw = self._read(task_id)
                if current is None:
                    return None
                if self._swap(task_id, raw, current.evolve(retry=current.retry + count, updated_at=go_time())):
                    return current.retry + count
            raise RuntimeError(f"Go record {task_id} kept changing under {CAS_TRIES} tries")

        budget: int | None = self.buffer.call(add, f"add {count} retries to Go task {task_id}")
        return budget

    def delete(self, task_ids: Sequence[str]) -> None:
        ids = list(task_ids)

        def remove() -> None:
            self.collection.delete_many({"task_id": {"$in": ids}})
            self.starts.delete_many({"_id": {"$in": ids}})

        self.buffer.write(remove, f"delete {len(ids)} Go record(s)")

    def start(self, task_id: str, token: str) -> GoStarted | None:
        def start() -> GoStarted:
            self._indexes()
            record = self._move(task_id, Status.IN_PROGRESS, None, None)
            if record is not None and record.status.is_final:
                return GoStarted(record, 0)
            again = {"token": {"$ne": token}} if token else {}  # a call made again for one delivery
            try:
                doc = self.starts.find_one_and_update(
                    {"_id": task_id, **again},
                    {"$inc": {"n": 1}, "$set": {"token": token}, "$setOnInsert": {"created_at": utcnow()}},
                    upsert=True,
                    return_document=pymongo.ReturnDocument.AFTER,
                )
            except DuplicateKeyError:  # this delivery's start is counted: the upsert met its document
                doc = self.starts.find_one({"_id": task_id})
            return GoStarted(record, int((doc or {}).get("n") or 1))

        started: GoStarted | None = self.buffer.write(start, f"start Go task {task_id}")
        return started

    def get(self, task_id: str) -> GoRecord | None:
        record: GoRecord | None = self.buffer.call(lambda: self._read(task_id)[0], f"read Go task {task_id}")
        return record

    def recent(self, names: frozenset[str] = frozenset()) -> list[GoRecord]:
        def newest() -> list[Any]:
            return list(
                self.collection.find({}, {"_id": False}).sort("created_at", pymongo.DESCENDING).limit(MAX_LISTED)
            )

        docs = self.buffer.call(newest, "list Go records")
        found = {doc["task_id"]: GoRecord.from_json(doc["record"], str(doc.get("task_id"))) for doc in docs}
        for record in self._gos_own(names) if names else []:
            found.setdefault(record.task_id, record)
        return sorted(found.values(), key=_created, reverse=True)[:MAX_LISTED]

    def _gos_own(self, names: frozenset[str]) -> list[GoRecord]:
        """The documents Go Cogman itself keeps (``cogman.tasks``, fixed in Go) of the tasks ``names``:
        read among the ``MAX_SCANNED`` newest of that collection (by ``created_at``, which Go's TTL index
        serves), so the work stays bounded when cogman's own records share it. A cogman document has
        ``created_us``; Go's have not."""
        from cogman.gowire import store

        go = self.collection.database.client[GO_DATABASE][GO_COLLECTION]
        pipeline: list[dict[str, Any]] = [
            {"$sort": {"created_at": -1}},
            {"$limit": store.MAX_SCANNED},
            {"$match": {"name": {"$in": sorted(names)}, "created_us": {"$exists": False}}},
            {"$limit": MAX_LISTED},
        ]
        docs = self.buffer.call(lambda: list(go.aggregate(pipeline)), "list Go Cogman's own records")
        records = []
        for doc in docs:
            try:
                records.append(GoRecord.from_go_document(doc, f"{GO_DATABASE}.{GO_COLLECTION}[{doc.get('_id')}]"))
            except CorruptRecord:
                continue  # not Go's: not listed
        return records

    def read_as_task(self, task_id: str) -> TaskRecord | None:
        return read_as_task(self, task_id)

    def _read(self, task_id: str) -> tuple[GoRecord | None, str]:
        doc = self.collection.find_one({"task_id": task_id}, {"_id": False, "record": True})
        if doc is None:
            return None, ""
        raw = str(doc["record"])
        return GoRecord.from_json(raw, f"{self.collection.full_name}[task_id={task_id}]"), raw

    def _swap(self, task_id: str, raw: str, record: GoRecord) -> bool:
        changes = {"record": record.to_json(), "status": record.status.value}
        swapped = self.collection.update_one({"task_id": task_id, "record": raw}, {"$set": changes})
        return bool(swapped.matched_count == 1)

    def _indexes(self) -> None:
        key = id(self.collection.database.client), self.collection.full_name
        with _INDEXED_LOCK:
            if hash(key) in _INDEXED:
                return
            self.collection.create_index([("task_id", pymongo.ASCENDING)], name="task_id_unique", unique=True)
            if self.ttl_seconds > 0:
                ttl = self.ttl_seconds
                self.collection.create_index([("created_at", pymongo.ASCENDING)], name="TTL", expireAfterSeconds=ttl)
                self.starts.create_index([("created_at", pymongo.ASCENDING)], name="TTL", expireAfterSeconds=ttl)
            _INDEXED.add(hash(key))


def as_task(doc: dict[str, Any], key: str) -> TaskRecord:
    """A document of the records' collection as cogman's readers show it (``MongoBackend.get``): cogman's
    own, or, where cogman shares Go's ``cogman.tasks``, one Go Cogman wrote (no ``created_us``)."""
    if "created_us" in doc:
        return codec.from_document(doc, key)
    return GoRecord.from_go_document(doc, key).to_task_record()


def _created(record: GoRecord) -> datetime:
    """When the record was created, for listing newest first (one with no readable time: now)."""
    try:
        return parse_go_time(record.created_at)
    except ValueError:
        return utcnow()
