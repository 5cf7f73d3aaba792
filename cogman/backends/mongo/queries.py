"""Listing and counting MongoDB task records (the API, the CLI and re-enqueue), served by the indexes
``ensure_indexes`` creates: newest first on ``created_at`` then the exact ``created_us``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pymongo

from cogman.backends import codec
from cogman.backends.base import StatusBucket, TaskPage, TaskQuery, buckets_from_counts
from cogman.backends.mongo.schema import record_key
from cogman.errors import CorruptRecord
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.outage import WriteBuffer

log = logging.getLogger("cogman.backends.mongo")
#: Go Cogman's collection (fixed in Go), which cogman's defaults share: Go's readers list it, cogman's
#: lists Go's documents apart (cogman/backends/go_query.py).
GOS_COLLECTION = "cogman.tasks"


def query(collection: Any, buffer: WriteBuffer, where: str, query: TaskQuery) -> TaskPage:
    match = codec.document_filter(query)
    if where == GOS_COLLECTION:  # shared with Go Cogman: its documents (no created_us) are not cogman's
        match.setdefault("created_us", {"$exists": True})

    def read() -> tuple[list[dict[str, Any]], int]:
        docs: list[dict[str, Any]] = []
        if query.limit > 0:
            cursor = collection.find(match, {"_id": False}).sort(
                [("created_at", pymongo.DESCENDING), ("created_us", pymongo.DESCENDING)]
            )
            docs = list(cursor.skip(query.skip).limit(query.limit))
        return docs, collection.count_documents(match)

    docs, total = buffer.call(read, "query task records")
    records = []
    for doc in docs:
        try:
            records.append(codec.from_document(doc, record_key(where, str(doc.get("task_id")))))
        except CorruptRecord as exc:
            log.warning("query skipped %s", exc)
    return TaskPage(records=records, total=total)


def count_by_status(
    collection: Any, buffer: WriteBuffer, start: datetime, end: datetime, bucket_seconds: float
) -> list[StatusBucket]:
    if bucket_seconds <= 0:
        raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds}")
    origin = codec.to_us(start)
    match = codec.document_filter(TaskQuery(created_after=start, created_before=end))
    offset = {"$divide": [{"$subtract": ["$created_us", origin]}, 1_000_000]}
    pipeline = [
        {"$match": match},
        {
            "$group": {
                "_id": {"status": "$status", "bucket": {"$floor": {"$divide": [offset, bucket_seconds]}}},
                "n": {"$sum": 1},
            }
        },
    ]
    rows = buffer.call(lambda: list(collection.aggregate(pipeline)), "count task records")
    buckets: dict[int, dict[Status, int]] = {}
    for row in rows:
        try:
            status = Status(row["_id"]["status"])
        except ValueError:
            log.warning("count skipped %d record(s) with unknown status %r", row["n"], row["_id"]["status"])
            continue
        buckets.setdefault(int(row["_id"]["bucket"]), {})[status] = int(row["n"])
    return buckets_from_counts(start, bucket_seconds, buckets)
