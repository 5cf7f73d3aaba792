"""The oldest records waiting in ``queued``, read from the front of each shard's status index.

``<prefix>:idx:status:queued`` is a sorted set scored by ``created_at``: its first entries (ZRANGEBYSCORE
from the TTL window's floor, LIMIT 0 n) are the oldest queued records, an O(log N + n) read whatever
the size of the log. Each shard's first ``limit`` are merged; the first ``limit`` of those are read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from cogman.backends.redis import fanout, queries
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.redis.keys import KeyLayout
    from cogman.backends.redis.wire import Link
    from cogman.record import TaskRecord


class Linked(Protocol):
    def _link(self) -> Link: ...


def oldest_queued(backend: Linked, limit: int) -> list[TaskRecord]:
    """``Backend.oldest_queued`` on Redis."""
    if limit <= 0:
        return []
    link = backend._link()

    def fronts() -> list[tuple[float, bytes, KeyLayout]]:
        pipe = link.client.pipeline(transaction=False)
        for layout in link.shards.layouts:
            index = layout.index("status", Status.QUEUED.value)
            pipe.zrangebyscore(index, f"({layout.window_floor()}", "+inf", start=0, num=limit, withscores=True)
        found = pipe.execute()
        return [(score, task_id, layout) for layout, entries in zip(link.shards.layouts, found, strict=True)
                for task_id, score in entries]  # fmt: skip

    entries = sorted(link.buffer.call(fronts, "read the oldest queued records"), key=lambda e: (e[0], e[1]))
    return fanout._read(link, link.client.register_script(queries.RECORDS), entries[:limit])
