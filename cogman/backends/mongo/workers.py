"""Operator actions and worker heartbeats in MongoDB: a ``workers`` collection beside the tasks, one
document per worker (``_id`` = worker id, ``info`` = its JSON), removed by a TTL index on ``expires_at``;
``add_retries`` raises a chain's budget for a manual retry; ``delete`` forgets records
(``AsyncResult.forget``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo import ReturnDocument

from cogman.backends import codec
from cogman.backends.mongo.schema import updated
from cogman.record import utcnow

if TYPE_CHECKING:
    from cogman.backends.mongo.schema import IndexesMade, MongoStore
    from cogman.backends.outage import WriteBuffer

log = logging.getLogger("cogman.backends.mongo")

WORKERS_COLLECTION = "workers"


def add_retries(collection: Any, buffer: WriteBuffer, task_id: str, count: int) -> int | None:
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")

    def add() -> int | None:
        doc = collection.find_one_and_update(
            {"task_id": task_id},
            {"$inc": {"retry": count}, "$set": updated()},
            projection={"_id": False, "retry": True},
            return_document=ReturnDocument.AFTER,
        )
        budget = None if doc is None else doc.get("retry")
        return budget if isinstance(budget, int) else None

    return buffer.call(add, f"add {count} retries to task {task_id}")


def workers_collection(collection: Any) -> Any:
    """The heartbeats live in the database of the records ``collection``."""
    return collection.database[WORKERS_COLLECTION]


def record_heartbeat(
    collection: Any, buffer: WriteBuffer, made: IndexesMade, worker_id: str, info: dict[str, Any], ttl: float
) -> None:
    def write() -> None:
        if not made.workers:
            workers_collection(collection).create_index(
                [("expires_at", pymongo.ASCENDING)], name="expires_at_ttl", expireAfterSeconds=0
            )
            made.workers = True
        expires = utcnow() + timedelta(seconds=ttl)
        doc = {"_id": worker_id, "info": codec.dumps(info), "expires_at": expires}
        workers_collection(collection).replace_one({"_id": worker_id}, doc, upsert=True)

    buffer.call(write, f"record the heartbeat of worker {worker_id}")


def live_workers(collection: Any, buffer: WriteBuffer) -> list[dict[str, Any]]:
    # The TTL monitor runs once a minute: expired documents may linger, so the filter decides.
    docs = buffer.call(
        lambda: list(workers_collection(collection).find({"expires_at": {"$gt": utcnow()}})), "list the workers"
    )
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


def forget_worker(collection: Any, buffer: WriteBuffer, worker_id: str) -> None:
    buffer.call(lambda: workers_collection(collection).delete_one({"_id": worker_id}), f"forget worker {worker_id}")


def delete(collection: Any, early: Any, buffer: WriteBuffer, task_ids: Sequence[str]) -> None:
    """Forget the records and the statuses kept for them in ``early``."""
    ids = list(task_ids)
    if not ids:
        return

    def remove() -> None:
        collection.delete_many({"task_id": {"$in": ids}})
        early.delete_many({"task_id": {"$in": ids}})

    buffer.write(remove, f"delete {len(ids)} record(s)")


class MongoOperations:
    """These functions as :class:`~cogman.backends.mongo.backend.MongoBackend`'s methods."""

    def add_retries(self: MongoStore, task_id: str, count: int) -> int | None:
        return add_retries(self.collection, self.buffer, task_id, count)

    def record_heartbeat(self: MongoStore, worker_id: str, info: dict[str, Any], ttl: float) -> None:
        record_heartbeat(self.collection, self.buffer, self.indexes_made, worker_id, info, ttl)

    def live_workers(self: MongoStore) -> list[dict[str, Any]]:
        return live_workers(self.collection, self.buffer)

    def forget_worker(self: MongoStore, worker_id: str) -> None:
        forget_worker(self.collection, self.buffer, worker_id)

    def delete(self: MongoStore, task_ids: Sequence[str]) -> None:
        delete(self.collection, self.early, self.buffer, task_ids)
