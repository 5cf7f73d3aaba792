"""Operator actions and worker heartbeats in Redis.

``<prefix>:worker:<id>`` holds a worker's heartbeat (JSON, with a TTL); ``<prefix>:workers`` is a sorted
set of worker ids by last write, so listing needs no SCAN. ``add_retries`` raises a chain's budget for a
manual retry (Cogman's ``/retry``); ``delete`` forgets records (``AsyncResult.forget``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cogman.backends import codec
from cogman.record import utcnow
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.redis.wire import Link

log = logging.getLogger("cogman.backends.redis")

#: How long a worker id stays in the ``workers`` index after its last heartbeat (its key expires sooner).
WORKERS_INDEX_TTL = 24 * 3600

# ARGV: prefix, task id, count, updated_at (JSON). Returns the new budget, or nil for an unknown record.
ADD_RETRIES = """
local key = ARGV[1] .. ':task:' .. ARGV[2]
if redis.call('TYPE', key)['ok'] ~= 'hash' then return nil end
local budget = tonumber(redis.call('HGET', key, 'retry'))
if not budget then return nil end
budget = budget + tonumber(ARGV[3])
redis.call('HSET', key, 'retry', tostring(budget), 'updated_at', ARGV[4])
return budget
"""

#: Ids per delete script call (keeps each script short).
DELETE_CHUNK = 500

# ARGV: prefix, then task ids. Removes each record's hash, its entries in every index (the name,
# name-and-status and primary-key indexes named by its own fields), its wake-up token and any early
# status stub; returns how many records existed.
DELETE = """
local P = ARGV[1]
local STATUSES = {STATUS_NAMES}
local function decoded(raw)
  if not raw then return nil end
  local ok, value = pcall(cjson.decode, raw)
  if ok and type(value) == 'string' then return value end
  return nil
end
local removed = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = P .. ':task:' .. id
  if redis.call('TYPE', key)['ok'] == 'hash' then
    local f = redis.call('HMGET', key, 'name', 'primary_key')
    local name, pk = decoded(f[1]), decoded(f[2])
    if name then redis.call('ZREM', P .. ':idx:name:' .. name, id) end
    if pk then redis.call('ZREM', P .. ':idx:pk:' .. pk, id) end
    if f[1] then
      for _, status in ipairs(STATUSES) do redis.call('ZREM', P .. ':idx:ns:' .. status .. ':' .. f[1], id) end
    end
    removed = removed + 1
  end
  redis.call('ZREM', P .. ':idx:all', id)
  for _, status in ipairs(STATUSES) do redis.call('ZREM', P .. ':idx:status:' .. status, id) end
  redis.call('DEL', key, P .. ':done:' .. id, P .. ':early:' .. id)
end
return removed
""".replace("STATUS_NAMES", ", ".join(f"'{status.value}'" for status in Status))


def add_retries(link: Link, task_id: str, count: int) -> int | None:
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    script = link.client.register_script(ADD_RETRIES)
    layout = link.shards.of(task_id)
    args: list[Any] = [layout.prefix, task_id, count, codec.dumps(utcnow().isoformat())]
    budget = link.buffer.call(link.script(script, args, layout), f"add {count} retries to task {task_id}")
    return None if budget is None else int(budget)


def record_heartbeat(link: Link, worker_id: str, info: dict[str, Any], ttl: float) -> None:
    keys = link.shards.workers()  # one fixed shard: one slot on a Redis Cluster
    index = keys.workers()

    def write() -> None:
        now = time.time()
        pipe = link.client.pipeline(transaction=True)
        pipe.set(keys.worker(worker_id), codec.dumps(info), px=max(1, int(ttl * 1000)))
        pipe.zadd(index, {worker_id: now})
        pipe.zremrangebyscore(index, "-inf", now - WORKERS_INDEX_TTL)
        pipe.expire(index, WORKERS_INDEX_TTL)
        pipe.execute()

    link.buffer.call(write, f"record the heartbeat of worker {worker_id}")


def live_workers(link: Link) -> list[dict[str, Any]]:
    keys = link.shards.workers()
    index = keys.workers()

    def read() -> list[tuple[bytes, bytes | None]]:
        ids: list[bytes] = link.client.zrange(index, 0, -1)  # type: ignore[assignment]
        if not ids:
            return []
        values: list[bytes | None] = link.client.mget([keys.worker(i.decode()) for i in ids])  # type: ignore[assignment]
        expired = [i for i, value in zip(ids, values, strict=True) if value is None]
        if expired:
            link.client.zrem(index, *expired)
        return list(zip(ids, values, strict=True))

    workers = []
    for worker_id, raw in link.buffer.call(read, "list the workers"):
        if raw is None:
            continue
        try:
            info = json.loads(raw)
        except ValueError:
            log.warning("skipping unreadable heartbeat of worker %s", worker_id.decode(errors="replace"))
            continue
        if isinstance(info, dict):
            workers.append(info)
    return workers


def forget_worker(link: Link, worker_id: str) -> None:
    keys = link.shards.workers()

    def forget() -> None:
        pipe = link.client.pipeline(transaction=True)
        pipe.delete(keys.worker(worker_id))
        pipe.zrem(keys.workers(), worker_id)
        pipe.execute()

    link.buffer.call(forget, f"forget worker {worker_id}")


def delete(link: Link, task_ids: Sequence[str]) -> None:
    script = link.client.register_script(DELETE)

    for layout, members in link.shards.group(task_ids):  # one shard's ids per call: one slot per script
        for start in range(0, len(members), DELETE_CHUNK):
            chunk = list(members[start : start + DELETE_CHUNK])
            link.buffer.write(link.script(script, [layout.prefix, *chunk], layout), f"delete {len(chunk)} record(s)")


class RedisOperations:
    """These functions as :class:`~cogman.backends.redis.backend.RedisBackend`'s methods."""

    if TYPE_CHECKING:

        def _link(self) -> Link: ...

    def add_retries(self, task_id: str, count: int) -> int | None:
        return add_retries(self._link(), task_id, count)

    def record_heartbeat(self, worker_id: str, info: dict[str, Any], ttl: float) -> None:
        record_heartbeat(self._link(), worker_id, info, ttl)

    def live_workers(self) -> list[dict[str, Any]]:
        return live_workers(self._link())

    def forget_worker(self, worker_id: str) -> None:
        forget_worker(self._link(), worker_id)

    def delete(self, task_ids: Sequence[str]) -> None:
        delete(self._link(), task_ids)
