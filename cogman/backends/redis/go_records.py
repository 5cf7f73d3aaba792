"""Go-format task records in Redis (issue 22): Go Cogman's layout, kept atomically.

Go keeps each attempt as a JSON string under the bare TaskID (no prefix), written ``SET`` + ``EXPIRE``
after a ``GET`` with no lock. Here every change is one Lua script that reads the record, applies Go's
rule (a status must outrank the current one, :data:`cogman.gowire.record.GO_RANK`), writes the whole
record back in Go's encoding and refreshes the TTL (``redis_ttl``): no writer, Go's or ours, can lose
another's change. A create is ``SET NX EX``. The scripts re-encode the record field by field as Go's
``encoding/json`` does (Go's field order, its string escapes, ``Duration`` kept as the text it was),
so Go reads ours as its own; tests/integration/test_gowire_redis.py compares them with Go's bytes.

Each script touches one key, the record's own, so it runs unchanged on a Redis Cluster.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from cogman.backends.codec import to_us
from cogman.errors import CorruptRecord
from cogman.gowire.record import GO_RANK, GoRecord, go_float, go_time, parse_go_time
from cogman.gowire.store import MAX_LISTED, read_as_task
from cogman.record import TaskRecord, utcnow
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.redis.wire import Link

log = logging.getLogger("cogman.backends.redis")

_ENCODE = r"""
local function esc(s)
  if type(s) ~= 'string' then s = '' end
  s = string.gsub(s, '[%z\1-\31"\\<>&]', function(c)
    if c == '"' then return '\\"' elseif c == '\\' then return '\\\\'
    elseif c == '\n' then return '\\n' elseif c == '\r' then return '\\r' elseif c == '\t' then return '\\t'
    end
    return string.format('\\u%04x', string.byte(c))
  end)
  s = string.gsub(s, '\226\128\168', '\\u2028')
  s = string.gsub(s, '\226\128\169', '\\u2029')
  return '"' .. s .. '"'
end
local function encode(t, duration)
  local payload = 'null'
  if type(t.Payload) == 'string' then payload = esc(t.Payload) end
  return '{"TaskID":' .. esc(t.TaskID) .. ',"PrimaryKey":' .. esc(t.PrimaryKey) .. ',"Name":' .. esc(t.Name)
    .. ',"OriginalTaskID":' .. esc(t.OriginalTaskID) .. ',"Retry":' .. string.format('%d', tonumber(t.Retry) or 0)
    .. ',"Payload":' .. payload .. ',"Priority":' .. esc(t.Priority) .. ',"Status":' .. esc(t.Status)
    .. ',"FailError":' .. esc(t.FailError) .. ',"Duration":' .. duration .. ',"CreatedAt":' .. esc(t.CreatedAt)
    .. ',"UpdatedAt":' .. esc(t.UpdatedAt) .. '}'
end
local function load(key)
  local raw = redis.call('GET', key)
  if not raw then return nil, nil, nil end
  local ok, t = pcall(cjson.decode, raw)
  if not ok or type(t) ~= 'table' or type(t.Status) ~= 'string' then return raw, nil, nil end
  return raw, t, string.match(raw, '"Duration":%s*([^,}%s]+)') or 'null'
end
"""

#: ARGV: key, status, its Go rank, the ranks (JSON), UpdatedAt, set FailError ("1"/"0"), FailError,
#: Duration ("" keeps it), TTL seconds. Reply: {"moved"|"kept", record} | {"unknown"} | {"corrupt"}.
UPDATE = (
    _ENCODE
    + r"""
local raw, t, duration = load(ARGV[1])
if not raw then return {'unknown'} end
if not t then return {'corrupt'} end
local ranks = cjson.decode(ARGV[4])
if tonumber(ARGV[3]) <= (ranks[t.Status] or 0) then return {'kept', raw} end
t.Status = ARGV[2]
t.UpdatedAt = ARGV[5]
if ARGV[6] == '1' then t.FailError = ARGV[7] end
if ARGV[8] ~= '' then duration = ARGV[8] end
local value = encode(t, duration)
redis.call('SET', ARGV[1], value, 'EX', tonumber(ARGV[9]))
return {'moved', value}
"""
)

#: ARGV: key, UpdatedAt, TTL seconds. Reply: the budget left, -1 when spent, -2 unknown, -3 corrupt.
TAKE_RETRY = (
    _ENCODE
    + r"""
local raw, t, duration = load(ARGV[1])
if not raw then return -2 end
if not t then return -3 end
local left = tonumber(t.Retry) or 0
if left <= 0 then return -1 end
t.Retry = left - 1
t.UpdatedAt = ARGV[2]
redis.call('SET', ARGV[1], encode(t, duration), 'EX', tonumber(ARGV[3]))
return left - 1
"""
)

_RANKS = json.dumps({status.value: rank for status, rank in GO_RANK.items()})


class RedisGoRecords:
    """Go records in the Redis database the backend uses; implements ``cogman.gowire.store.GoRecords``.
    Writes go through the backend's write buffer (parked and replayed in order during an outage)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.ttl_seconds = max(1, link.keys.ttl_ms // 1000)
        #: The cogman-side listing of Go records: Go keeps no index (``recent``).
        self.index = link.keys.index("go")
        self._update = link.client.register_script(UPDATE)
        self._retry = link.client.register_script(TAKE_RETRY)

    def create(self, record: GoRecord) -> bool:
        client, ttl = self.link.client, self.ttl_seconds
        stored = self.link.buffer.write(
            lambda: client.set(record.task_id, record.to_json(), nx=True, ex=ttl),
            f"create Go record {record.task_id}",
        )
        self._listed(record)
        return bool(stored)

    def recent(self) -> list[GoRecord]:
        client, index, floor = self.link.client, self.index, self.link.keys.window_floor()
        newest = lambda: client.zrevrangebyscore(index, "+inf", floor, start=0, num=MAX_LISTED)  # noqa: E731
        listed = self.link.buffer.call(newest, "list Go records")
        ids = [task_id.decode() if isinstance(task_id, bytes) else str(task_id) for task_id in listed]
        if not ids:
            return []
        raws = self.link.buffer.call(lambda: client.mget(ids), "read Go records")
        found = []
        for task_id, raw in zip(ids, raws, strict=True):
            try:
                if raw is not None:
                    found.append(GoRecord.from_json(raw, task_id))
            except CorruptRecord:
                continue  # the bare key holds something else now (MGET gives nil for other types)
        return found

    def _listed(self, record: GoRecord) -> None:
        """Index the record for listing (``<prefix>:idx:go``, by creation time; entries out of the TTL
        window trimmed): a hint for ``recent``, which reads each record, so it needs no atomicity."""
        client, index, floor = self.link.client, self.index, self.link.keys.window_floor()
        score = to_us(parse_go_time(record.created_at)) if record.created_at else to_us(utcnow())

        def add() -> None:
            pipe = client.pipeline(transaction=False)
            pipe.zadd(index, {record.task_id: score})
            pipe.zremrangebyscore(index, "-inf", f"({floor}")
            pipe.pexpire(index, self.link.keys.ttl_ms)
            pipe.execute()

        self.link.buffer.write(add, f"list Go record {record.task_id}")

    def update(
        self, task_id: str, status: Status, *, fail_error: str | None = None, duration: float | None = None
    ) -> GoRecord | None:
        if status is Status.SUCCESS:
            duration_text = "null" if duration is None else go_float(duration)
        else:
            duration_text = "null" if status is Status.FAILED else ""
        set_fail = status is Status.FAILED or fail_error is not None
        args = [
            task_id,
            status.value,
            GO_RANK[status],
            _RANKS,
            go_time(),
            "1" if set_fail else "0",
            fail_error or "",
            duration_text,
            self.ttl_seconds,
        ]
        out = self.link.buffer.write(self.link.run(self._update, args), f"move Go task {task_id} to {status}")
        if not out:
            return None
        kind = out[0].decode()
        if kind == "corrupt":
            log.error("not moving Go task %s to %s: its key holds no Go task record", task_id, status)
            return None
        if kind == "unknown":
            return None
        try:
            record = GoRecord.from_json(out[1], task_id)
        except CorruptRecord as exc:
            log.error("Go task %s moved to %s over an unreadable record: %s", task_id, status, exc)
            return None
        if kind == "moved" and status is Status.IN_PROGRESS:
            self._listed(record)  # a Go client's task a cogman worker runs: listed from here on
        return record

    def take_retry(self, original_task_id: str) -> int | None:
        args = [original_task_id, go_time(), self.ttl_seconds]
        left = self.link.buffer.call(self.link.run(self._retry, args), f"take a retry of Go task {original_task_id}")
        if left == -3:
            log.error("no retry for Go task %s: its key holds no Go task record", original_task_id)
        return int(left) if left >= 0 else None

    def count_start(self, task_id: str) -> int:
        client, key, ttl = self.link.client, f"{self.link.keys.prefix}:go-starts:{task_id}", self.ttl_seconds

        def count() -> int:
            pipe = client.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, ttl)
            return int(pipe.execute()[0])

        starts: int = self.link.buffer.call(count, f"count a start of Go task {task_id}")
        return starts

    def get(self, task_id: str) -> GoRecord | None:
        client = self.link.client
        raw = self.link.buffer.call(lambda: _get_string(client, task_id), f"read Go task {task_id}")
        return None if raw is None else GoRecord.from_json(raw, task_id)

    def read_as_task(self, task_id: str) -> TaskRecord | None:
        """The Go record as cogman's readers show it, for ``RedisBackend.get`` when cogman has no record
        under that id; None when the bare key holds anything but a Go record (it is not ours to judge)."""
        return read_as_task(self, task_id)


def _get_string(client: Any, key: str) -> bytes | None:
    """GET, with a key of another type (a hash, a list) read as no record: bare ids share the database
    with anything else an application keeps there."""
    import redis

    try:
        value: bytes | None = client.get(key)
    except redis.ResponseError as exc:
        if "WRONGTYPE" in str(exc):
            return None
        raise
    return value
