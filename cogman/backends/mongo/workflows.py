"""Workflows and periodic tasks in MongoDB: the claim of a record (``create_new``) and the chord's set.

``create_new`` is one ``insert_one`` on the unique ``task_id`` index: the duplicate-key error tells the
losers. A chord's set is one document of ``<collection>_chords`` (``_id`` = chord id, ``outcomes.m<i>``
= member i's outcome as JSON text), written by conditional single-document updates (a redelivered
member keeps the first outcome), so it needs no transaction; a TTL index forgets it after ``mongo_ttl``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo.errors import DuplicateKeyError

from cogman.backends import codec
from cogman.backends.mongo import schema as mongo_schema
from cogman.record import utcnow

if TYPE_CHECKING:
    from cogman.backends.mongo.schema import IndexesMade, MongoStore
    from cogman.backends.outage import WriteBuffer
    from cogman.record import TaskRecord


def create_new(
    collection: Any, early: Any, buffer: WriteBuffer, record: TaskRecord, *, ensure_indexes: Callable[[], None]
) -> bool:
    """``ensure_indexes`` creates the records' indexes if they are missing: the unique one on ``task_id``
    is what makes this insert a claim."""

    def insert() -> bool:
        ensure_indexes()
        try:
            collection.insert_one(dict(codec.to_document(record)))
        except DuplicateKeyError:
            return False
        mongo_schema.apply_early(collection, early, [record.task_id])
        return True

    return buffer.call(insert, f"create task {record.task_id} if new")


def chords_collection(collection: Any) -> Any:
    """The chords' sets live beside the records ``collection``, named after it."""
    return collection.database[f"{collection.name}_chords"]


def join_chord(
    collection: Any,
    buffer: WriteBuffer,
    made: IndexesMade,
    ttl_seconds: int,
    chord_id: str,
    index: int,
    size: int,
    outcome: str,
) -> list[str] | None:
    """Chords' sets expire ``ttl_seconds`` after they were started, as records do (never with 0)."""
    if not 0 <= index < size:
        raise ValueError(f"chord member index {index} is outside 0..{size - 1}")
    chords = chords_collection(collection)
    field = f"outcomes.m{index}"

    def join() -> dict[str, Any]:
        if not made.chords and ttl_seconds > 0:
            chords.create_index(
                [("created_at", pymongo.ASCENDING)], name="created_at_ttl", expireAfterSeconds=ttl_seconds
            )
            made.chords = True
        for _ in range(3):
            try:
                chords.update_one(
                    {"_id": chord_id, field: {"$exists": False}},
                    {"$set": {field: outcome}, "$setOnInsert": {"created_at": utcnow()}},
                    upsert=True,
                )
                break
            except DuplicateKeyError:
                # The document exists and this member is in it already, or another member created the
                # document between our filter and our insert: then the update above applies on a retry.
                if chords.count_documents({"_id": chord_id, field: {"$exists": True}}, limit=1):
                    break
        doc = chords.find_one({"_id": chord_id})
        return dict(doc["outcomes"]) if doc is not None else {}

    outcomes = buffer.call(join, f"join member {index} to chord {chord_id}")
    if len(outcomes) < size:
        return None
    return [str(outcomes[f"m{i}"]) for i in range(size)]


class MongoWorkflows:
    """These functions as :class:`~cogman.backends.mongo.backend.MongoBackend`'s methods."""

    def create_new(self: MongoStore, record: TaskRecord) -> bool:
        return create_new(self.collection, self.early, self.buffer, record, ensure_indexes=self._indexes)

    def join_chord(self: MongoStore, chord_id: str, index: int, size: int, outcome: str) -> list[str] | None:
        return join_chord(
            self.collection, self.buffer, self.indexes_made, self.ttl_seconds, chord_id, index, size, outcome
        )
