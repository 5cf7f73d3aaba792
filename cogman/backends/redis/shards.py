"""The task log split into shards, so that on a Redis Cluster every script touches keys of one slot.

A script may only touch keys of one hash slot on a Redis Cluster. The log is therefore cut into ``S``
shards (``redis_shards``): the shard of a task is ``crc32(task id) mod S``, and each shard has its own
key prefix ``<redis_prefix>:{<tag>}``, whose hash tag puts the shard's records, its ``early``/``done``
keys and its indexes in one slot. The Lua scripts build every key from the prefix they are given, so
they run unchanged on a shard; calls that take many ids are split by shard, queries fan out over the
shards and merge (fanout.py).

Each shard's tag is the first decimal number whose slot falls in the shard's range of slots
(``[n * 16384 / S, (n + 1) * 16384 / S)``), so the shards spread evenly over the primaries of the
cluster, whatever ranges the primaries hold.

With one shard and no cluster (one Redis, Sentinel) the layout is exactly the unsharded one:
``<redis_prefix>:task:<id>``, no tag, scripts called with no KEYS, so existing data keeps working.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from cogman.backends.redis.keys import KeyLayout
from cogman.errors import ConfigError

#: ``redis_shards`` on a Redis Cluster when not set: enough for the shards to spread over the primaries.
CLUSTER_DEFAULT_SHARDS = 16
#: The fixed shard of worker heartbeats and the worker registry.
WORKERS_SHARD = 0

T = TypeVar("T")


def tags(count: int) -> list[str]:
    """The hash tag of each of ``count`` shards: shard n's is the first number whose slot lies in the
    n-th of ``count`` equal ranges of slots."""
    if not 1 <= count <= REDIS_CLUSTER_HASH_SLOTS:
        raise ConfigError(f"redis_shards must be between 1 and {REDIS_CLUSTER_HASH_SLOTS}, got {count!r}")
    found: list[str | None] = [None] * count
    missing, number = count, 0
    while missing:
        tag = str(number)
        shard = slot_of_tag(tag) * count // REDIS_CLUSTER_HASH_SLOTS
        if found[shard] is None:
            found[shard] = tag
            missing -= 1
        number += 1
    return [tag for tag in found if tag is not None]


def slot_of_tag(tag: str) -> int:
    return key_slot(("{" + tag + "}").encode())


class Shards:
    """The key layout of each shard and the shard of a task id. ``tagged`` is False only for the
    unsharded layout (one shard, not a cluster): no tag, and scripts called with no KEYS."""

    __slots__ = ("count", "layouts", "single", "tagged")

    def __init__(self, prefix: str, ttl_ms: int, count: int, *, cluster: bool) -> None:
        self.tagged = cluster or count > 1
        if not self.tagged:
            self.count, self.single = 1, KeyLayout(prefix, ttl_ms)
            self.layouts = [self.single]
            return
        if "{" in prefix:
            raise ConfigError(
                f"redis_prefix {prefix!r} contains '{{': on a Redis Cluster, or with redis_shards > 1, the "
                "prefix must not hold a hash tag (cogman adds one per shard)"
            )
        self.count = count
        self.layouts = [
            KeyLayout(f"{prefix}:{{{tag}}}", ttl_ms, route=(f"{prefix}:{{{tag}}}:wait-mark",)) for tag in tags(count)
        ]
        self.single = self.layouts[0]

    def of(self, task_id: str) -> KeyLayout:
        """The layout of the shard holding ``task_id`` (the unsharded layout when there is one shard)."""
        if self.count == 1:
            return self.single
        return self.layouts[zlib.crc32(task_id.encode()) % self.count]

    def workers(self) -> KeyLayout:
        """Heartbeats and the worker registry live in one fixed shard."""
        return self.layouts[WORKERS_SHARD]

    def group(
        self, items: Iterable[T], task_id: Callable[[T], str | bytes] | None = None
    ) -> list[tuple[KeyLayout, list[T]]]:
        """``items`` by shard, in the order of their first appearance, each shard's in order: task ids (str
        or bytes), or anything ``task_id`` gives the id of."""
        if self.count == 1:
            return [(self.single, list(items))]
        by_shard: dict[int, list[T]] = {}
        for item in items:
            found: Any = item if task_id is None else task_id(item)
            raw = found if isinstance(found, bytes) else str(found).encode()
            by_shard.setdefault(zlib.crc32(raw) % self.count, []).append(item)
        return [(self.layouts[shard], members) for shard, members in by_shard.items()]
