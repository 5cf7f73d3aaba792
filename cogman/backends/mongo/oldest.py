"""The oldest records waiting in ``queued``: the front of the ``status_created`` index (schema.py), walked
backwards, ``limit`` documents read whatever the size of the collection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pymongo

from cogman.backends import codec
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.mongo.schema import MongoStore
    from cogman.record import TaskRecord


def oldest_queued(backend: MongoStore, limit: int) -> list[TaskRecord]:
    """``Backend.oldest_queued`` on MongoDB."""
    if limit <= 0:
        return []
    order = [("created_at", pymongo.ASCENDING), ("created_us", pymongo.ASCENDING)]

    def read() -> list[dict[str, Any]]:
        return list(backend.collection.find({"status": Status.QUEUED.value}).sort(order).limit(limit))

    documents = backend.buffer.call(read, "read the oldest queued records")
    return [codec.from_document(doc, backend.key(str(doc.get("task_id")))) for doc in documents]
