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
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo.errors import DuplicateKeyError

from cogman.gowire.record import GoRecord, go_time, parse_go_time
from cogman.gowire.store import MAX_LISTED, read_as_task, updated
from cogman.record import TaskRecord, utcnow
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.outage import WriteBuffer

#: How often a change is tried again when another writer changed the record in between.
CAS_TRIES = 50
_INDEXED: set[int] = set()
_INDEXED_LOCK = threading.Lock()


class MongoGoRecords:
    """Implements ``cogman.gowire.store.GoRecords`` beside the records' collection (``<name>_go``)."""

    def __init__(self, records: Any, buffer: WriteBuffer, ttl_seconds: int) -> None:
        self.collection = records.database[f"{records.name}_go"]
        #: Starts of Go tasks (``count_start``), by task id: Go's record has no field for them.
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
        def change() -> GoRecord | None:
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

        result: GoRecord | None = self.buffer.write(change, f"move Go task {task_id} to {status}")
        return result

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

    def count_start(self, task_id: str) -> int:
        def count() -> int:
            self._indexes()
            doc = self.starts.find_one_and_update(
                {"_id": task_id},
                {"$inc": {"n": 1}, "$setOnInsert": {"created_at": utcnow()}},
                upsert=True,
                return_document=pymongo.ReturnDocument.AFTER,
            )
            return int(doc["n"])

        starts: int = self.buffer.call(count, f"count a start of Go task {task_id}")
        return starts

    def get(self, task_id: str) -> GoRecord | None:
        record: GoRecord | None = self.buffer.call(lambda: self._read(task_id)[0], f"read Go task {task_id}")
        return record

    def recent(self) -> list[GoRecord]:
        def newest() -> list[Any]:
            return list(
                self.collection.find({}, {"_id": False}).sort("created_at", pymongo.DESCENDING).limit(MAX_LISTED)
            )

        docs = self.buffer.call(newest, "list Go records")
        return [GoRecord.from_json(doc["record"], str(doc.get("task_id"))) for doc in docs]

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
