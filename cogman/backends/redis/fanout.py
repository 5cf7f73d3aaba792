"""Listing and counting over a sharded log (shards.py): each shard is asked, and the answers merged.

The answer is the one the same records give in one Redis: totals are summed, and a page is the
entries ``skip..skip+limit-1`` of all shards' entries ordered newest first, ties by id descending (the
order of ``ZRANGE ... REV`` on one index). Each shard gives its first ``skip + limit`` entries of that
order (no entry of the page can be further down in its own shard), so a call reads
``shards * (skip + limit)`` index entries at most, and the records of the page only. A query on one
index is one pipelined ``ZCOUNT`` + ``ZREVRANGEBYSCORE ... LIMIT`` per shard (sent to each node at
once on a Redis Cluster); a query combining the primary key with another filter walks each shard as
queries.py walks one Redis. Counting by status sums each shard's buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from cogman.backends.base import StatusBucket, TaskPage, TaskQuery, buckets_from_counts
from cogman.backends.codec import to_us
from cogman.backends.redis import queries

if TYPE_CHECKING:
    from cogman.backends.redis.keys import KeyLayout
    from cogman.backends.redis.wire import Link
    from cogman.record import TaskRecord
    from cogman.status import Status

#: One shard's entries of a page: (score, id) pairs.
Entries = list[tuple[float, bytes]]


def query(link: Link, query: TaskQuery, *, scan_script: Any, records_script: Any) -> TaskPage:
    low = max(link.keys.window_floor(), to_us(query.created_after) if query.created_after else 0)
    high = to_us(query.created_before) if query.created_before else None
    if high is not None and low > high:
        return TaskPage(records=[], total=0)
    want = query.skip + query.limit
    if len(queries._indexes(link.keys, query)) == 1:
        total, found = link.buffer.call(lambda: _tops(link, query, low, high, want), "query task records")
    else:
        total, found = _walks(link, query, scan_script, low, high)
    entries = [(score, task_id, layout) for layout, shard in found for score, task_id in shard]
    merged = sorted(entries, key=lambda entry: (entry[0], entry[1]), reverse=True)
    page = merged[query.skip : want]
    return TaskPage(records=_read(link, records_script, page), total=total)


def _tops(link: Link, query: TaskQuery, low: int, high: int | None, want: int) -> tuple[int, list[Any]]:
    """The total and each shard's first ``want`` entries of a one-index query, in one pipeline."""
    pipe = link.client.pipeline(transaction=False)
    for layout in link.shards.layouts:
        key = queries._indexes(layout, query)[0]
        pipe.zcount(key, low, "+inf" if high is None else high)
        if want > 0 and query.limit > 0:
            pipe.zrevrangebyscore(key, "+inf" if high is None else high, low, start=0, num=want, withscores=True)
    replies = iter(pipe.execute())
    total, found = 0, []
    for layout in link.shards.layouts:
        total += int(next(replies))
        if want > 0 and query.limit > 0:
            found.append((layout, [(float(score), task_id) for task_id, score in next(replies)]))
    return total, found


def _walks(link: Link, query: TaskQuery, scan_script: Any, low: int, high: int | None) -> tuple[int, list[Any]]:
    """The total and each shard's first ``skip + limit`` matching entries of a combined query."""
    total, found = 0, []
    for layout in link.shards.layouts:
        indexes = queries._indexes(layout, query)
        sizes = link.buffer.call(partial(queries._sizes, link.client, indexes), "size the indexes of a query")
        indexes.sort(key=sizes.__getitem__)
        matched, ids = queries.walk(link, layout, scan_script, indexes, (0, query.skip + query.limit), low, high)
        total += matched
        if ids:
            found.append((layout, _scored(link, indexes[0], ids)))
    return total, found


def _scored(link: Link, index: str, ids: Sequence[bytes]) -> Entries:
    """``ids`` with their scores in ``index`` (an id that left it meanwhile sorts last)."""

    def read() -> list[Any]:
        pipe = link.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.zscore(index, task_id)
        return pipe.execute()

    scores = link.buffer.call(read, "query task records")
    return [
        (float(score) if score is not None else float("-inf"), task_id)
        for task_id, score in zip(ids, scores, strict=True)
    ]


def _read(link: Link, records_script: Any, page: Sequence[tuple[float, bytes, KeyLayout]]) -> list[TaskRecord]:
    """The records of the page, in its order; each shard's read in one go."""
    by_shard: dict[int, tuple[KeyLayout, list[bytes]]] = {}
    for _, task_id, layout in page:
        by_shard.setdefault(id(layout), (layout, []))[1].append(task_id)
    records: dict[str, TaskRecord] = {}
    for layout, ids in by_shard.values():
        for record in queries._read(link, records_script, ids, layout):
            records[record.task_id] = record
    order = [task_id.decode() for _, task_id, _ in page]
    return [records[task_id] for task_id in order if task_id in records]


def count_by_status(link: Link, start: datetime, end: datetime, bucket_seconds: float) -> list[StatusBucket]:
    if bucket_seconds <= 0:
        raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds}")
    origin, low, high = to_us(start), max(to_us(start), link.keys.window_floor()), to_us(end)
    if low > high:
        return []

    def read() -> dict[int, dict[Status, int]]:
        summed: dict[int, dict[Status, int]] = {}
        for layout in link.shards.layouts:
            for bucket, counts in queries.bucket_counts(link, layout, (origin, low, high), bucket_seconds).items():
                into = summed.setdefault(bucket, {})
                for status, count in counts.items():
                    into[status] = into.get(status, 0) + count
        return summed

    return buckets_from_counts(start, bucket_seconds, link.buffer.call(read, "count task records"))
