"""Listing and counting Redis task records: the queries of the API, the CLI, ``/metrics`` and re-enqueue.

Records are indexed in sorted sets scored by ``created_at`` (microseconds): ``<prefix>:idx:all`` and one
per status, name, name-and-status and primary key (docs/backends.md). No script call's work grows with
the number of records: a query on one index (every filter but the primary key combined with another) is
two ``ZCOUNT`` and a page read by rank, O(log N + limit) whatever ``skip``; a primary key combined with
another filter walks the smaller index newest first, at most ``SCAN_BUDGET`` entries a call, looking each
up in the others, over as many calls as it takes. A script runs alone on the server, so one that
intersected whole indexes (the design before issue 19) held every other client up for as long as it ran.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cogman.backends import codec
from cogman.backends.base import StatusBucket, TaskPage, TaskQuery, buckets_from_counts
from cogman.backends.codec import to_us
from cogman.errors import CorruptRecord
from cogman.status import Status

if TYPE_CHECKING:
    import redis

    from cogman.backends.redis.keys import KeyLayout
    from cogman.backends.redis.wire import Link
    from cogman.record import TaskRecord

log = logging.getLogger("cogman.backends.redis")

#: Index entries one script call of a combined query examines (each one ZSCORE per other index).
SCAN_BUDGET = 500
#: Records one script call reads (HGETALL each).
READ_CHUNK = 100

# Appends {id, HGETALL} per id to ``out``: {'!', type} when the key holds something else than a hash.
_READ = """
local function read(ids, out)
  for _, id in ipairs(ids) do
    local key = ARGV[1] .. ':task:' .. id
    local kind = redis.call('TYPE', key)['ok']
    out[#out + 1] = id
    if kind == 'hash' or kind == 'none' then
      out[#out + 1] = redis.call('HGETALL', key)
    else
      out[#out + 1] = {'!', kind}
    end
  end
end
"""

# ARGV: prefix, index key, min, max ('+inf' or a score), skip, limit, records to read. Returns {total,
# then id, record for the first ``read`` ids of the page, then the page's other ids}. Paging by rank:
# ``ZRANGE ... BYSCORE LIMIT skip`` walks ``skip`` entries, a rank is found in O(log N).
PAGE = (
    _READ
    + """
local source, min, max = ARGV[2], ARGV[3], ARGV[4]
local skip, limit, reads = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local total = redis.call('ZCOUNT', source, min, max)
local out = {total}
if limit > 0 and skip < total then
  local above = 0
  if max ~= '+inf' then above = redis.call('ZCOUNT', source, '(' .. max, '+inf') end
  local ids = redis.call('ZRANGE', source, above + skip, above + math.min(skip + limit, total) - 1, 'REV')
  read({unpack(ids, 1, math.min(reads, #ids))}, out)
  for i = reads + 1, #ids do out[#out + 1] = ids[i] end
end
return out
"""
)

# ARGV: prefix, min, max, budget, cursor id ('' to start at max), its score, from, want, the index to
# walk, then the indexes each entry must also be in. Walks at most ``budget`` entries newest first from
# just after the cursor (by rank while the cursor is still in the index, else below its score) and
# returns {matched, done (0/1), last id, its score, the matched ids numbered from..from+want-1 (from 0)}.
SCAN = """
local min, max, budget = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local cursor, cursor_score, from, want, source = ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local start = 0
if cursor == '' then
  if max ~= '+inf' then start = redis.call('ZCOUNT', source, '(' .. max, '+inf') end
else
  local rank = redis.call('ZREVRANK', source, cursor)
  if rank then start = rank + 1 else start = redis.call('ZCOUNT', source, cursor_score, '+inf') end
end
local entries = redis.call('ZRANGE', source, start, start + budget - 1, 'REV', 'WITHSCORES')
local matched, done, last, last_score, ids = 0, 0, '', '', {}
if #entries < 2 * budget then done = 1 end
for i = 1, #entries, 2 do
  local id, score = entries[i], entries[i + 1]
  if tonumber(score) < min then
    done = 1
    break
  end
  local inside = true
  for k = 10, #ARGV do
    if not redis.call('ZSCORE', ARGV[k], id) then
      inside = false
      break
    end
  end
  if inside then
    if matched >= from and matched < from + want then ids[#ids + 1] = id end
    matched = matched + 1
  end
  last, last_score = id, score
end
local out = {matched, done, last, last_score}
for _, id in ipairs(ids) do out[#out + 1] = id end
return out
"""

# ARGV: prefix, then ids. Returns {id, record, ...} as PAGE does.
RECORDS = (
    _READ
    + """
local out = {}
read({unpack(ARGV, 2)}, out)
return out
"""
)


def query(link: Link, query: TaskQuery, *, page_script: Any, scan_script: Any, records_script: Any) -> TaskPage:
    """The three scripts come registered from the backend: registering hashes a script's source, so it is
    done once per client, not per query."""
    low = max(link.keys.window_floor(), to_us(query.created_after) if query.created_after else 0)
    high = to_us(query.created_before) if query.created_before else None
    if high is not None and low > high:
        return TaskPage(records=[], total=0)
    indexes = _indexes(link.keys, query)
    if len(indexes) == 1:
        return _page(link, page_script, records_script, indexes[0], query, low, high)
    sizes = link.buffer.call(lambda: _sizes(link.client, indexes), "size the indexes of a query")
    indexes.sort(key=lambda key: sizes[key])  # walk the smallest, look entries up in the others
    return _scan(link, scan_script, records_script, indexes, query, low, high)


def _indexes(keys: KeyLayout, query: TaskQuery) -> list[str]:
    """The indexes to intersect: name and status together are one index of their own."""
    indexes = []
    if query.status is not None and query.name is not None:
        indexes.append(keys.index("ns", f"{query.status.value}:{codec.dumps(query.name)}"))
    elif query.status is not None:
        indexes.append(keys.index("status", query.status.value))
    elif query.name is not None:
        indexes.append(keys.index("name", query.name))
    if query.primary_key is not None:
        indexes.append(keys.index("pk", query.primary_key))
    return indexes or [keys.index("all")]


def _sizes(client: redis.Redis, indexes: list[str]) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for key in indexes:
        pipe.zcard(key)
    return dict(zip(indexes, pipe.execute(), strict=True))


def _page(
    link: Link, page_script: Any, records_script: Any, key: str, query: TaskQuery, low: int, high: int | None
) -> TaskPage:
    reads = min(query.limit, READ_CHUNK)
    args = [link.keys.prefix, key, low, "+inf" if high is None else high, query.skip, query.limit, reads]
    out = link.buffer.call(link.run(page_script, args), "query task records")
    flat = out[1 : 1 + 2 * reads]
    records = _records(link.keys, flat) + _read(link, records_script, out[1 + 2 * reads :])
    return TaskPage(records=records, total=int(out[0]))


def _scan(
    link: Link, scan_script: Any, records_script: Any, indexes: list[str], query: TaskQuery, low: int, high: int | None
) -> TaskPage:
    total, ids = walk(link, link.keys, scan_script, indexes, (query.skip, query.limit), low, high)
    return TaskPage(records=_read(link, records_script, ids), total=total)


def walk(
    link: Link,
    keys: KeyLayout,
    scan_script: Any,
    indexes: list[str],
    window: tuple[int, int],
    low: int,
    high: int | None,
) -> tuple[int, list[bytes]]:
    """How many entries of ``indexes[0]`` are in all the others, and the ids of those numbered
    ``skip..skip+limit-1`` (``window``) newest first. Several calls of SCAN_BUDGET entries each; not one
    snapshot: an entry that moves between indexes meanwhile may be counted in neither or both, as
    records listed page by page may."""
    skip, limit = window
    total, cursor, cursor_score, ids = 0, b"", b"", []
    while True:
        start = max(0, skip - total)
        want = max(0, skip + limit - max(total, skip))
        args = [keys.prefix, low, "+inf" if high is None else high, SCAN_BUDGET, cursor, cursor_score, start, want]
        out = link.buffer.call(link.script(scan_script, [*args, *indexes], keys), "query task records")
        total += int(out[0])
        ids += out[4:]
        if int(out[1]):
            break
        cursor, cursor_score = out[2], out[3]
    return total, ids


def _read(link: Link, records_script: Any, ids: Sequence[bytes], keys: KeyLayout | None = None) -> list[TaskRecord]:
    """The records of ``ids``, all of one shard (``keys``; the unsharded layout by default)."""
    keys = keys or link.keys
    records: list[TaskRecord] = []
    for start in range(0, len(ids), READ_CHUNK):
        args = [keys.prefix, *ids[start : start + READ_CHUNK]]
        records += _records(keys, link.buffer.call(link.script(records_script, args, keys), "read task records"))
    return records


def _records(keys: KeyLayout, out: Sequence[Any]) -> list[TaskRecord]:
    """The records of a {id, HGETALL, ...} reply; corrupt ones are logged and skipped."""
    records: list[TaskRecord] = []
    for task_id, flat in zip(out[::2], out[1::2], strict=True):
        key = keys.task(task_id.decode())
        if flat and flat[0] == b"!":
            log.warning("query skipped corrupt record at %s: a Redis %s, not a hash", key, flat[1].decode())
            continue
        if not flat:
            continue  # expired or deleted since it was indexed
        try:
            records.append(codec.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)), key))
        except CorruptRecord as exc:
            log.warning("query skipped %s", exc)
    return records


def count_by_status(link: Link, start: datetime, end: datetime, bucket_seconds: float) -> list[StatusBucket]:
    if bucket_seconds <= 0:
        raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds}")
    origin, low, high = to_us(start), max(to_us(start), link.keys.window_floor()), to_us(end)
    if low > high:
        return []
    found = link.buffer.call(
        lambda: bucket_counts(link, link.keys, (origin, low, high), bucket_seconds), "count task records"
    )
    return buckets_from_counts(start, bucket_seconds, found)


def bucket_counts(
    link: Link, keys: KeyLayout, span: tuple[int, int, int], bucket_seconds: float
) -> dict[int, dict[Status, int]]:
    """The count of each status in each bucket of one shard (``keys``): ``span`` is the buckets' origin
    and the scores counted (``low..high``, inclusive), in microseconds."""
    origin, low, high = span

    def bucket(score: int) -> int:
        return int(((score - origin) / 1_000_000) // bucket_seconds)

    def edge(index: int) -> int:
        return origin + math.ceil(index * bucket_seconds * 1_000_000)

    pipe = link.client.pipeline(transaction=False)
    for status in Status:
        pipe.zcount(keys.index("status", status.value), low, high)
    totals = dict(zip(Status, pipe.execute(), strict=True))
    first, last = bucket(low), bucket(high)
    plan: list[tuple[Status, list[int] | None]] = []
    indexes: list[int] | None
    pipe = link.client.pipeline(transaction=False)
    for status, total in totals.items():
        key = keys.index("status", status.value)
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
