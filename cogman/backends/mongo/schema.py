"""The shape of the MongoDB task log beside the records: its indexes, and the statuses that arrive before
their record (a create still parked in another process), kept in ``<collection>_early`` until the create
applies them, as the Redis backend keeps its ``early:`` stubs. It also holds what the backend and its
helpers must agree on without importing the backend: the fields every write stamps, how a record is
named in errors, and which index sets exist already.

Indexes are created if missing and never dropped (Cogman dropped and recreated its TTL index on every
connect): ``task_id`` unique, and newest-first compound indexes for each filter of the queries. The two
on the keys Go Cogman indexes too carry Go's names (``task_id_type``, ``TTL``), and an index that exists
on the same keys under another name is left as it is: MongoDB refuses an index whose keys exist under
another name, which would fail Go's ``Connect`` on a shared database (docs/go-interop.md).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pymongo
from pymongo.errors import ConnectionFailure, OperationFailure

from cogman.backends import codec
from cogman.record import utcnow
from cogman.status import RANK, Status, allows

if TYPE_CHECKING:
    from cogman.backends.outage import WriteBuffer

log = logging.getLogger("cogman.backends.mongo")

#: How long a status that arrived before its record is kept, waiting for the record's create.
EARLY_TTL_SECONDS = 3600
#: Go Cogman's names of its indexes on ``task_id`` (unique) and ``created_at`` (TTL), used for ours on
#: the same keys so that Go's ``Connect`` finds them as it names them.
GO_TASK_ID_INDEX, GO_TTL_INDEX = "task_id_type", "TTL"


class MongoStore(Protocol):
    """The MongoDB backend as its helper modules see it (they never import the backend)."""

    collection: Any
    early: Any
    buffer: WriteBuffer
    indexes_made: IndexesMade
    ttl_seconds: int

    def key(self, task_id: str) -> str: ...
    def _indexes(self) -> None: ...


@dataclass(slots=True)
class IndexesMade:
    """Which index sets one backend has created. Each is created before the first write that needs it,
    once (a server unreachable at startup gets them later), so the backend and its helpers share one."""

    tasks: bool = False
    workers: bool = False
    chords: bool = False
    unique: bool = False


def record_key(where: str, task_id: str) -> str:
    """How errors and logs name a record: ``<database>.<collection>[task_id=<id>]``."""
    return f"{where}[task_id={task_id}]"


def updated() -> dict[str, Any]:
    """The fields every write sets: the time, and the same in microseconds for exact comparisons."""
    now = utcnow()
    return {"updated_at": now, "updated_us": codec.to_us(now)}


def ensure_indexes(collection: Any, early: Any, ttl_seconds: int, where: str) -> None:
    """Create the indexes of ``collection`` (the records, ``where`` in logs) and ``early`` if missing;
    never drops one. A TTL that differs from ``ttl_seconds`` is updated with collMod where the server
    allows it, else left as it is with a warning."""
    newest = [("created_at", pymongo.DESCENDING), ("created_us", pymongo.DESCENDING)]
    specs: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = [
        (GO_TASK_ID_INDEX, [("task_id", pymongo.ASCENDING)], {"unique": True}),
        ("primary_key_created", [("primary_key", pymongo.ASCENDING), *newest], {}),
        ("status_created", [("status", pymongo.ASCENDING), *newest], {}),
        ("name_created", [("name", pymongo.ASCENDING), *newest], {}),
        ("created", newest, {}),
        (GO_TTL_INDEX, [("created_at", pymongo.ASCENDING)], {"expireAfterSeconds": ttl_seconds}),
    ]
    if ttl_seconds <= 0:  # mongo_ttl=0: keep records for good
        specs.pop()
    early.create_index([("task_id", pymongo.ASCENDING)], name="task_id_unique", unique=True)
    early.create_index([("created_at", pymongo.ASCENDING)], name="created_at_ttl", expireAfterSeconds=EARLY_TTL_SECONDS)
    existing = {tuple(tuple(k) for k in info["key"]): index for index, info in collection.index_information().items()}
    for name, keys, options in specs:
        other = existing.get(tuple(keys))
        if other is not None and other != name:
            log.info("index %s on %s: the same keys are indexed as %s already; left as it is", name, where, other)
            continue
        try:
            collection.create_index(keys, name=name, **options)
        except OperationFailure as exc:
            if name == GO_TTL_INDEX:
                update_ttl(collection, ttl_seconds, where)
            else:
                log.warning("index %s on %s left as it is: %s", name, where, exc)


def update_ttl(collection: Any, ttl_seconds: int, where: str) -> None:
    try:
        collection.database.command(
            {"collMod": collection.name, "index": {"name": GO_TTL_INDEX, "expireAfterSeconds": ttl_seconds}}
        )
    except ConnectionFailure:
        raise
    except Exception as exc:  # mongomock has no collMod; a server may refuse it
        log.warning("the TTL index of %s differs from mongo_ttl=%s and was left as it is: %s", where, ttl_seconds, exc)
        return
    log.info("TTL index of %s set to %s s", where, ttl_seconds)


def apply_early(collection: Any, early: Any, ids: list[str]) -> None:
    """Apply to the records of ``collection`` the statuses kept for them in ``early``."""
    for stub in list(early.find({"task_id": {"$in": ids}}, {"_id": False})):
        status = Status(stub.pop("status"))
        task_id = stub.pop("task_id")
        stub.pop("created_at", None)
        for name, moment in (stub.pop("at", None) or {}).items():
            stub[f"at.{name}"] = moment  # add to the record's history, never replace it
        allowed = [s.value for s in Status if allows(s, status)]
        collection.update_one(
            {"task_id": task_id, "status": {"$in": allowed}}, {"$set": {"status": status.value, **stub}}
        )
        early.delete_one({"task_id": task_id})


def keep_early(collection: Any, early: Any, task_id: str, status: Status, changes: dict[str, Any]) -> None:
    """Keep a status whose record is not here yet (its create may be parked in another process),
    unless a higher one is kept already; the record's create applies it."""
    lower = [s.value for s in Status if RANK[s] < RANK[status]]
    stub = {**changes, "status": status.value}
    # A DuplicateKeyError means a higher status is kept already: this one loses, as the status machine says.
    with contextlib.suppress(pymongo.errors.DuplicateKeyError):
        early.update_one(
            {"task_id": task_id, "$or": [{"status": {"$in": lower}}, {"status": {"$exists": False}}]},
            {"$set": stub, "$setOnInsert": {"created_at": utcnow()}},
            upsert=True,
        )
    if collection.find_one({"task_id": task_id}, {"_id": True}) is not None:
        apply_early(collection, early, [task_id])  # the create landed meanwhile and may have missed the stub
