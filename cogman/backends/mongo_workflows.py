"""Workflows and periodic tasks in MongoDB: the claim of a record (``create_new``) and the chord's set.

``create_new`` is one ``insert_one`` on the unique ``task_id`` index: the duplicate-key error tells the
losers. A chord's set is one document of ``<collection>_chords`` (``_id`` = chord id, ``outcomes.m<i>``
= member i's outcome as JSON text), written by conditional single-document updates (a redelivered
member keeps the first outcome), so it needs no transaction; a TTL index forgets it after ``mongo_ttl``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pymongo
from pymongo.errors import DuplicateKeyError

from cogman.backends import codec, mongo_schema
from cogman.record import utcnow

if TYPE_CHECKING:
    from cogman.backends.mongo import MongoBackend
    from cogman.record import TaskRecord


def create_new(backend: MongoBackend, record: TaskRecord) -> bool:
    def insert() -> bool:
        backend._indexes()
        try:
            backend.collection.insert_one(dict(codec.to_document(record)))
        except DuplicateKeyError:
            return False
        mongo_schema.apply_early(backend, [record.task_id])
        return True

    return backend.buffer.call(insert, f"create task {record.task_id} if new")


def chords_collection(backend: MongoBackend) -> Any:
    return backend.collection.database[f"{backend.collection.name}_chords"]


def join_chord(backend: MongoBackend, chord_id: str, index: int, size: int, outcome: str) -> list[str] | None:
    if not 0 <= index < size:
        raise ValueError(f"chord member index {index} is outside 0..{size - 1}")
    chords = chords_collection(backend)
    field = f"outcomes.m{index}"

    def join() -> dict[str, Any]:
        if not backend.chords_index_ready and backend.ttl_seconds > 0:
            chords.create_index([("created_at", pymongo.ASCENDING)], name="created_at_ttl",
                                expireAfterSeconds=backend.ttl_seconds)  # fmt: skip
            backend.chords_index_ready = True
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

    outcomes = backend.buffer.call(join, f"join member {index} to chord {chord_id}")
    if len(outcomes) < size:
        return None
    return [str(outcomes[f"m{i}"]) for i in range(size)]
