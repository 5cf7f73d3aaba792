"""Unique tasks in Redis: the holder check and the create of a unique send in one Lua script.

The key ``<prefix>:unique:<key>`` holds the task id of the send that took it. The script reads it, reads
the holder's record and, when the holder was retried, its latest attempt (``latest_attempt_id``), and
either answers with the holder (its chain is not final) or creates the new record with the same
``create`` function as every create and takes the key, with a lifetime of ``hold_ms`` (``unique_for``)
or the record's TTL. One script, so two senders on two machines can never both create.

The holder's chain and the key must be readable by one script: on a sharded log (``redis_shards`` > 1 or
a Redis Cluster) a retry attempt lives in another slot than its original, so unique sends are refused
there with a ConfigError rather than decided from two reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from cogman.backends.redis import scripts
from cogman.errors import ConfigError

if TYPE_CHECKING:
    from cogman.backends.redis.wire import Link
    from cogman.record import TaskRecord


class Linked(Protocol):
    """The Redis backend as this helper sees it: its ``Link``."""

    def _link(self) -> Link: ...


# ARGV: common(4), unique key, hold_ms ('' for the record's TTL), then one record as read by read_record.
# Returns {'held', holder id} or {'created', id}.
CREATE_UNIQUE = """
local lock = P .. ':unique:' .. ARGV[5]
local holder = redis.call('GET', lock)
if holder then
  local f = redis.call('HMGET', P .. ':task:' .. holder, 'status', 'latest_attempt_id')
  local status = f[1]
  if status and f[2] then
    local ok, latest = pcall(cjson.decode, f[2])
    if ok and type(latest) == 'string' and latest ~= holder then
      status = redis.call('HGET', P .. ':task:' .. latest, 'status')
    end
  end
  if status and not FINAL[status] then return {'held', holder} end
end
local id, name, pk, fields = read_record(7)
create(id, name, pk, fields)
local hold = ARGV[6]
if hold == '' then hold = TTL end
redis.call('SET', lock, id, 'PX', hold)
return {'created', id}
"""

_CREATE_UNIQUE = scripts.source(CREATE_UNIQUE)


def create_unique(backend: Linked, record: TaskRecord, key: str, hold_seconds: float | None) -> str | None:
    """``Backend.create_unique`` on Redis; never buffered (BackendUnavailable when Redis is away)."""
    link = backend._link()
    if link.shards.tagged:
        raise ConfigError(
            f"unique_key {key!r}: unique tasks need an unsharded Redis log (redis_shards=1, not a Redis "
            "Cluster): a retried task's attempts live in other slots than the key"
        )
    script = link.client.register_script(_CREATE_UNIQUE)
    layout = link.shards.single
    hold = "" if hold_seconds is None else max(1, int(hold_seconds * 1000))
    args: list[Any] = [*layout.common(), key, hold, *scripts.record_args(record)]
    what = f"create task {record.task_id} under unique key {key!r}"
    outcome, holder = link.buffer.call(link.script(script, args, layout), what)
    return None if bytes(outcome) == b"created" else bytes(holder).decode()
