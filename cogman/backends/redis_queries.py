"""Listing and counting Redis task records: the queries of the API, the CLI and re-enqueue.

Records are indexed in sorted sets scored by ``created_at`` (microseconds): ``<prefix>:idx:all`` and one
per status, name and primary key. A query intersects the indexes its filters name (in a Lua script, one
round trip) and reads the page of records; counting reads the status indexes (see docs/backends.md).
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from cogman.backends import codec
from cogman.backends.base import StatusBucket, TaskPage, TaskQuery, buckets_from_counts
from cogman.backends.codec import to_us
from cogman.errors import CorruptRecord
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.redis import RedisBackend

log = logging.getLogger("cogman.backends.redis")


def query(backend: RedisBackend, query: TaskQuery) -> TaskPage:
    keys = []
    if query.status is not None:
        keys.append(backend.index_key("status", query.status.value))
    if query.name is not None:
        keys.append(backend.index_key("name", query.name))
    if query.primary_key is not None:
        keys.append(backend.index_key("pk", query.primary_key))
    low = max(backend._window_floor(), to_us(query.created_after) if query.created_after else 0)
    high = to_us(query.created_before) if query.created_before else None
    if high is not None and low > high:
        return TaskPage(records=[], total=0)
    scratch = f"{backend.prefix}:scratch:{uuid.uuid4().hex}"
    args = [
        *backend._common(),
        low,
        "+inf" if high is None else high,
        query.skip,
        query.limit,
        scratch,
        *(keys or [backend.index_key("all")]),
    ]
    out = backend.buffer.call(backend._run(backend._query, args), "query task records")
    records = []
    for task_id, flat in zip(out[1::2], out[2::2], strict=True):
        key = backend.key(task_id.decode())
        if flat and flat[0] == b"!":
            log.warning("query skipped corrupt record at %s: a Redis %s, not a hash", key, flat[1].decode())
            continue
        if not flat:
            continue  # expired or deleted since it was indexed
        try:
            records.append(codec.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)), key))
        except CorruptRecord as exc:
            log.warning("query skipped %s", exc)
    return TaskPage(records=records, total=int(out[0]))


def count_by_status(backend: RedisBackend, start: datetime, end: datetime, bucket_seconds: float) -> list[StatusBucket]:
    if bucket_seconds <= 0:
        raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds}")
    origin, low, high = to_us(start), max(to_us(start), backend._window_floor()), to_us(end)
    if low > high:
        return []

    def bucket(score: int) -> int:
        return int(((score - origin) / 1_000_000) // bucket_seconds)

    def edge(index: int) -> int:
        return origin + math.ceil(index * bucket_seconds * 1_000_000)

    def read() -> dict[int, dict[Status, int]]:
        pipe = backend.client.pipeline(transaction=False)
        for status in Status:
            pipe.zcount(backend.index_key("status", status.value), low, high)
        totals = dict(zip(Status, pipe.execute(), strict=True))
        first, last = bucket(low), bucket(high)
        plan: list[tuple[Status, list[int] | None]] = []
        indexes: list[int] | None
        pipe = backend.client.pipeline(transaction=False)
        for status, total in totals.items():
            key = backend.index_key("status", status.value)
            if 0 < total <= max(2000, last - first + 1):
                pipe.zrange(key, low, high, byscore=True, withscores=True)
                plan.append((status, None))
            elif total:
                indexes = list(range(first, last + 1))
                for i in indexes:
                    pipe.zcount(key, max(low, edge(i)), f"({min(high + 1, edge(i + 1))}")
                plan.append((status, indexes))
        replies = iter(pipe.execute())
        buckets: dict[int, dict[Status, int]] = {}
        for status, indexes in plan:
            if indexes is None:
                for _, score in next(replies):
                    counts = buckets.setdefault(bucket(int(score)), {})
                    counts[status] = counts.get(status, 0) + 1
                continue
            for i in indexes:
                count = next(replies)
                if count:
                    buckets.setdefault(i, {})[status] = count
        return buckets

    found = backend.buffer.call(read, "count task records")
    return buckets_from_counts(start, bucket_seconds, found)
