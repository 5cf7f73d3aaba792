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
from cogman.record import utcnow

if TYPE_CHECKING:
    from cogman.backends.mongo import MongoBackend

log = logging.getLogger("cogman.backends.mongo")

WORKERS_COLLECTION = "workers"


def add_retries(backend: MongoBackend, task_id: str, count: int) -> int | None:
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")

    def add() -> int | None:
        doc = backend.collection.find_one_and_update(
            {"task_id": task_id},
            {"$inc": {"retry": count}, "$set": backend._updated()},
            projection={"_id": False, "retry": True},
            return_document=ReturnDocument.AFTER,
        )
        budget = None if doc is None else doc.get("retry")
        return budget if isinstance(budget, int) else None

    return backend.buffer.call(add, f"add {count} retries to task {task_id}")


def workers_collection(backend: MongoBackend) -> Any:
    return backend.collection.database[WORKERS_COLLECTION]


def record_heartbeat(backend: MongoBackend, worker_id: str, info: dict[str, Any], ttl: float) -> None:
    def write() -> None:
        if not backend.workers_index_ready:
            workers_collection(backend).create_index(
                [("expires_at", pymongo.ASCENDING)], name="expires_at_ttl", expireAfterSeconds=0
            )
            backend.workers_index_ready = True
        expires = utcnow() + timedelta(seconds=ttl)
        doc = {"_id": worker_id, "info": codec.dumps(info), "expires_at": expires}
        workers_collection(backend).replace_one({"_id": worker_id}, doc, upsert=True)

    backend.buffer.call(write, f"record the heartbeat of worker {worker_id}")


def live_workers(backend: MongoBackend) -> list[dict[str, Any]]:
    # The TTL monitor runs once a minute: expired documents may linger, so the filter decides.
    docs = backend.buffer.call(
        lambda: list(workers_collection(backend).find({"expires_at": {"$gt": utcnow()}})), "list the workers"
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


def forget_worker(backend: MongoBackend, worker_id: str) -> None:
    backend.buffer.call(
        lambda: workers_collection(backend).delete_one({"_id": worker_id}), f"forget worker {worker_id}"
    )


def delete(backend: MongoBackend, task_ids: Sequence[str]) -> None:
    ids = list(task_ids)
    if not ids:
        return

    def remove() -> None:
        backend.collection.delete_many({"task_id": {"$in": ids}})
        backend.early.delete_many({"task_id": {"$in": ids}})

    backend.buffer.write(remove, f"delete {len(ids)} record(s)")
