"""The shape of the MongoDB task log beside the records: its indexes, and the statuses that arrive before
their record (a create still parked in another process), kept in ``<collection>_early`` until the create
applies them, as the Redis backend keeps its ``early:`` stubs.

Indexes are created if missing and never dropped (Cogman dropped and recreated its TTL index on every
connect): ``task_id`` unique, and newest-first compound indexes for each filter of the queries.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo.errors import ConnectionFailure, OperationFailure

from cogman.record import utcnow
from cogman.status import RANK, Status, allows

if TYPE_CHECKING:
    from cogman.backends.mongo import MongoBackend

log = logging.getLogger("cogman.backends.mongo")

#: How long a status that arrived before its record is kept, waiting for the record's create.
EARLY_TTL_SECONDS = 3600


def ensure_indexes(backend: MongoBackend) -> None:
    """Create the indexes if missing; never drops one. A TTL that differs from the config is updated
    with collMod where the server allows it, else left as it is with a warning."""
    newest = [("created_at", pymongo.DESCENDING), ("created_us", pymongo.DESCENDING)]
    specs: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = [
        ("task_id_unique", [("task_id", pymongo.ASCENDING)], {"unique": True}),
        ("primary_key_created", [("primary_key", pymongo.ASCENDING), *newest], {}),
        ("status_created", [("status", pymongo.ASCENDING), *newest], {}),
        ("name_created", [("name", pymongo.ASCENDING), *newest], {}),
        ("created", newest, {}),
        ("created_at_ttl", [("created_at", pymongo.ASCENDING)], {"expireAfterSeconds": backend.ttl_seconds}),
    ]
    if backend.ttl_seconds <= 0:  # mongo_ttl=0: keep records for good
        specs.pop()
    backend.early.create_index([("task_id", pymongo.ASCENDING)], name="task_id_unique", unique=True)
    backend.early.create_index(
        [("created_at", pymongo.ASCENDING)], name="created_at_ttl", expireAfterSeconds=EARLY_TTL_SECONDS
    )
    for name, keys, options in specs:
        try:
            backend.collection.create_index(keys, name=name, **options)
        except OperationFailure as exc:
            if name == "created_at_ttl":
                update_ttl(backend)
            else:
                log.warning("index %s on %s left as it is: %s", name, backend.where, exc)
    backend._indexes_ready = True


def update_ttl(backend: MongoBackend) -> None:
    try:
        backend.collection.database.command(
            {
                "collMod": backend.collection.name,
                "index": {"name": "created_at_ttl", "expireAfterSeconds": backend.ttl_seconds},
            }
        )
    except ConnectionFailure:
        raise
    except Exception as exc:  # mongomock has no collMod; a server may refuse it
        log.warning(
            "the TTL index of %s differs from mongo_ttl=%s and was left as it is: %s",
            backend.where,
            backend.ttl_seconds,
            exc,
        )
        return
    log.info("TTL index of %s set to %s s", backend.where, backend.ttl_seconds)


def apply_early(backend: MongoBackend, ids: list[str]) -> None:
    for stub in list(backend.early.find({"task_id": {"$in": ids}}, {"_id": False})):
        status = Status(stub.pop("status"))
        task_id = stub.pop("task_id")
        stub.pop("created_at", None)
        for name, moment in (stub.pop("at", None) or {}).items():
            stub[f"at.{name}"] = moment  # add to the record's history, never replace it
        allowed = [s.value for s in Status if allows(s, status)]
        backend.collection.update_one(
            {"task_id": task_id, "status": {"$in": allowed}}, {"$set": {"status": status.value, **stub}}
        )
        backend.early.delete_one({"task_id": task_id})


def keep_early(backend: MongoBackend, task_id: str, status: Status, changes: dict[str, Any]) -> None:
    """Keep a status whose record is not here yet (its create may be parked in another process),
    unless a higher one is kept already; the record's create applies it."""
    lower = [s.value for s in Status if RANK[s] < RANK[status]]
    stub = {**changes, "status": status.value}
    # A DuplicateKeyError means a higher status is kept already: this one loses, as the status machine says.
    with contextlib.suppress(pymongo.errors.DuplicateKeyError):
        backend.early.update_one(
            {"task_id": task_id, "$or": [{"status": {"$in": lower}}, {"status": {"$exists": False}}]},
            {"$set": stub, "$setOnInsert": {"created_at": utcnow()}},
            upsert=True,
        )
    if backend.collection.find_one({"task_id": task_id}, {"_id": True}) is not None:
        apply_early(backend, [task_id])  # the create landed meanwhile and may have missed the stub
