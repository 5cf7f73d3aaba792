"""Unique tasks in MongoDB: a key document per unique key, taken by a conditional upsert.

``<collection>_unique`` holds one document per key (``_id`` = the key): the holder's task id, when it
took the key (``taken``, seconds since the epoch) and when its ``unique_for`` runs out (``until``, or
None). A send reads the key; when its holder's chain is final, gone, or past ``until``, it takes the key
with an update conditioned on the holder it read (or an insert on the unique ``_id`` when there is no
document), so of two senders exactly one moves the key; the other reads again and finds the winner.
Only the sender that took the key inserts its record, right after, then marks the key ``written``. A
key whose holder has no record is free once written (the record was forgotten or expired); not yet
written, it counts as held for :data:`PENDING_GRACE` seconds after ``taken`` (its sender is still
writing, or died in between), so a racing sender never takes it while the first is writing its record.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo.errors import DuplicateKeyError

from cogman.backends import codec
from cogman.backends.mongo import schema as mongo_schema
from cogman.errors import BackendUnavailable
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.mongo.schema import MongoStore
    from cogman.record import TaskRecord


#: Seconds a key taken by a sender that has not written its record yet counts as held.
PENDING_GRACE = 30.0
#: Reads and conditional takes before giving up when the key keeps changing hands under this sender.
MAX_ROUNDS = 20
_AGAIN: Any = object()


def create_unique(backend: MongoStore, record: TaskRecord, key: str, hold_seconds: float | None) -> str | None:
    """``Backend.create_unique`` on MongoDB; never buffered (BackendUnavailable when MongoDB is away)."""
    locks = backend.collection.database[f"{backend.collection.name}_unique"]

    def attempt() -> Any:
        backend._indexes()
        if not backend.indexes_made.unique:
            locks.create_index([("expires_at", pymongo.ASCENDING)], name="expires_at_ttl", expireAfterSeconds=0)
            backend.indexes_made.unique = True
        now = time.time()
        doc = locks.find_one({"_id": key})
        if doc is None or doc["task_id"] != record.task_id:  # this sender's own key: a retried call
            until = None if hold_seconds is None else now + hold_seconds
            taken = {
                "task_id": record.task_id,
                "taken": now,
                "until": until,
                "expires_at": _expiry(backend, now, until),
            }
            if doc is not None:
                if _holds(backend.collection, doc, now):
                    return doc["task_id"]
                if locks.find_one_and_update({"_id": key, "task_id": doc["task_id"], "taken": doc["taken"]},
                                             {"$set": taken}) is None:  # fmt: skip
                    return _AGAIN
            else:
                try:
                    locks.insert_one({"_id": key, **taken})
                except DuplicateKeyError:
                    return _AGAIN
        with contextlib.suppress(DuplicateKeyError):  # a retried call's insert that went through
            backend.collection.insert_one(dict(codec.to_document(record)))
        mongo_schema.apply_early(backend.collection, backend.early, [record.task_id])
        locks.update_one({"_id": key, "task_id": record.task_id}, {"$set": {"written": True}})
        return None

    for _ in range(MAX_ROUNDS):
        out = backend.buffer.call(attempt, f"create task {record.task_id} under unique key {key!r}")
        if out is not _AGAIN:
            return out  # type: ignore[no-any-return]
    raise BackendUnavailable(f"unique key {key!r} changed hands {MAX_ROUNDS} times while sending; try again")


def _expiry(backend: MongoStore, now: float, until: float | None) -> datetime | None:
    """When the TTL index may drop the key: once its holder's record has expired too (``mongo_ttl``) and
    past ``until``; never with ``mongo_ttl`` 0 (records kept for good)."""
    if backend.ttl_seconds <= 0:
        return None
    return datetime.fromtimestamp(max(now + backend.ttl_seconds, until or 0.0), UTC)


def _holds(collection: Any, doc: dict[str, Any], now: float) -> bool:
    """The key's holder is a chain that is not final (or a sender still writing its record)."""
    if doc.get("until") is not None and now >= doc["until"]:
        return False
    fields = {"_id": False, "status": True, "latest_attempt_id": True}
    holder = collection.find_one({"task_id": doc["task_id"]}, fields)
    if holder is None:  # forgotten or expired; or its sender has not written it yet
        return not doc.get("written") and bool(now - doc["taken"] < PENDING_GRACE)
    latest = holder.get("latest_attempt_id")
    if latest and latest != doc["task_id"]:
        holder = collection.find_one({"task_id": latest}, fields)
        if holder is None:  # spawned on the original, not inserted yet (two writes on MongoDB)
            return True
    return not Status(str(holder["status"])).is_final
