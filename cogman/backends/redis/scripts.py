"""The Lua scripts of the Redis backend, generated from :mod:`cogman.status`.

Each script is one atomic step and one round trip (EVALSHA). The rank table comes from
:data:`cogman.status.RANK`, so Python and Redis cannot disagree about the status machine.

Every hash field holds the JSON encoding of the record's field (``"queued"`` with its quotes, ``3``,
``null``), so Lua never decodes or re-encodes payloads or results (cjson would turn ``[]`` into ``{}``
and round floats). ``_score`` holds ``created_at`` in integer microseconds since the epoch, the score
of the record in every index.

ARGV of every script starts with the same four values:
``prefix, ttl_ms, trim_below ("(<score>": index entries below it are out of the TTL window), done_ttl_ms``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cogman.backends import codec
from cogman.status import FINAL, RANK, UNCONFIRMED, Status

if TYPE_CHECKING:
    from cogman.record import TaskRecord

#: How long a transition for a record that does not exist yet is kept, waiting for the record's create
#: (which another process may still be replaying after an outage).
EARLY_TTL_MS = 3_600_000

_COMMON = """
local P, TTL, TRIM, DONE_TTL = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local RANK = {%(rank)s}
local RAW = {%(raw)s}
local FINAL = {%(final)s}
local UNCONFIRMED = {%(unconfirmed)s}
local EARLY_TTL = %(early_ttl)d

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Index keys trimmed and given their TTL by this call already: a batch touches each index once.
local KEPT = {}

local function touch_index(key, score, member)
  redis.call('ZADD', key, score, member)
  if not KEPT[key] then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', TRIM)
    redis.call('PEXPIRE', key, TTL)
    KEPT[key] = true
  end
end

-- The index of one task name in one status: name is the hash's JSON text of it (``"resize"``), so the
-- key is built the same way from a create's fields and from a stored hash, with nothing decoded.
local function ns_index(status, name)
  return P .. ':idx:ns:' .. RAW[status] .. ':' .. name
end

local function signal_done(id)
  local done = P .. ':done:' .. id
  redis.call('DEL', done)
  redis.call('RPUSH', done, '1')
  redis.call('PEXPIRE', done, DONE_TTL)
end

local function field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end

-- Store one record if absent (a replayed or repeated create never resets a record that moved on): fields
-- is the flat field/value list (with status and _score). A transition that arrived before the record (an
-- early stub) is applied if the status machine allows it. Returns 'created' or 'exists'.
local function create(id, name, pk, fields)
  local key = P .. ':task:' .. id
  if redis.call('EXISTS', key) == 1 then return 'exists' end
  redis.call('HSET', key, unpack(fields))
  local status, score = field(fields, 'status'), field(fields, '_score')
  local early = P .. ':early:' .. id
  local stub = redis.call('HGETALL', early)
  if #stub > 0 then
    local later = field(stub, 'status')
    if later and RANK[later] and RANK[later] > RANK[status] then
      redis.call('HSET', key, unpack(stub))
      status = later
    end
    redis.call('DEL', early)
  end
  redis.call('PEXPIRE', key, TTL)
  touch_index(P .. ':idx:all', score, id)
  touch_index(P .. ':idx:status:' .. RAW[status], score, id)
  touch_index(P .. ':idx:name:' .. name, score, id)
  local jname = field(fields, 'name')
  if jname then touch_index(ns_index(status, jname), score, id) end
  if string.sub(pk, 1, 1) == '1' then touch_index(P .. ':idx:pk:' .. string.sub(pk, 2), score, id) end
  if FINAL[status] then signal_done(id) end
  return 'created'
end

-- Move one record; returns 'moved', 'kept' (not allowed), 'unknown' or 'corrupt: <why>'.
local function transition(id, status, fields)
  local key = P .. ':task:' .. id
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    local early = P .. ':early:' .. id
    local cur = redis.call('HGET', early, 'status')
    if (not cur) or (not RANK[cur]) or RANK[status] > RANK[cur] then
      redis.call('HSET', early, 'status', status, unpack(fields))
      redis.call('PEXPIRE', early, EARLY_TTL)
    end
    return 'unknown'
  end
  if kind ~= 'hash' then return 'corrupt: a Redis ' .. kind .. ', not a hash' end
  local stored = redis.call('HMGET', key, 'status', '_score', 'name')
  local cur, score, jname = stored[1], stored[2], stored[3]
  if (not cur) or (not RANK[cur]) then return 'corrupt: bad status field ' .. tostring(cur) end
  if RANK[status] <= RANK[cur] then return 'kept' end
  if not score then return 'corrupt: no _score field' end
  redis.call('HSET', key, 'status', status, unpack(fields))
  redis.call('PEXPIRE', key, TTL)
  redis.call('ZREM', P .. ':idx:status:' .. RAW[cur], id)
  touch_index(P .. ':idx:status:' .. RAW[status], score, id)
  if jname then
    redis.call('ZREM', ns_index(cur, jname), id)
    touch_index(ns_index(status, jname), score, id)
  end
  if FINAL[status] then signal_done(id) end
  return 'moved'
end

-- Read create() arguments from ARGV starting at i: id, name, pk ('0' for none, else '1' .. key), n, then
-- n field/value pairs.
local function read_record(i)
  local id, name, pk, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local fields = {}
  for j = 1, 2 * n do fields[j] = ARGV[i + 3 + j] end
  return id, name, pk, fields, i + 4 + 2 * n
end
"""

# ARGV: common(4), count, then count records as read by read_record.
CREATE = """
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  local id, name, pk, fields, nxt = read_record(i)
  create(id, name, pk, fields)
  i = nxt
end
return 'ok'
"""

# ARGV: common(4), status (JSON), want_record (0/1), nfields, field/value pairs, then task ids.
# Returns one outcome per id; with want_record, the outcome of the single id followed by its HGETALL.
TRANSITION = """
local status, want, n = ARGV[5], ARGV[6], tonumber(ARGV[7])
local fields = {}
for j = 1, 2 * n do fields[j] = ARGV[7 + j] end
local out = {}
for i = 8 + 2 * n, #ARGV do out[#out + 1] = transition(ARGV[i], status, fields) end
if want == '1' and #out == 1 and out[1] ~= 'unknown' and string.sub(out[1], 1, 7) ~= 'corrupt' then
  local flat = redis.call('HGETALL', P .. ':task:' .. ARGV[#ARGV])
  for j = 1, #flat do out[#out + 1] = flat[j] end
end
return out
"""

# ARGV: common(4), status (JSON), updated_at (JSON), id, '1' when sharded (the original's budget is
# then not read here: it may live in another slot; returned as '?') else '0', and the delivery's token
# ('' for none). Moves the record to the status (in_progress) if allowed and returns {outcome, status,
# original_task_id, attempt, budget, starts}: the fields as stored (JSON), the budget read from the
# original's record, and the starts counted in ``_starts``: one more for each delivery (``_start_token``)
# unless the record is final, so a call made again for one delivery (a retry, a replay) counts once;
# or {'unknown'} / {'corrupt: <why>'}.
START = """
local id = ARGV[7]
local outcome = transition(id, ARGV[5], {'updated_at', ARGV[6], 'at:in_progress', ARGV[6]})
if outcome == 'unknown' or string.sub(outcome, 1, 7) == 'corrupt' then return {outcome} end
local key = P .. ':task:' .. id
local f = redis.call('HMGET', key, 'status', 'original_task_id', 'attempt', 'retry')
local starts = 0
if f[1] and not FINAL[f[1]] then
  if ARGV[9] ~= '' and redis.call('HGET', key, '_start_token') == ARGV[9] then
    starts = tonumber(redis.call('HGET', key, '_starts')) or 1  -- this delivery's call, made again
  else
    starts = redis.call('HINCRBY', key, '_starts', 1)
    redis.call('HSET', key, '_start_token', ARGV[9])
  end
end
local budget = f[4]
if f[2] then
  local ok, original = pcall(cjson.decode, f[2])
  if ok and type(original) == 'string' and original ~= id then
    if ARGV[8] == '1' then budget = '?' else budget = redis.call('HGET', P .. ':task:' .. original, 'retry') end
  end
end
return {outcome, f[1] or 'null', f[2] or 'null', f[3] or '1', budget or '0', tostring(starts)}
"""

# The original's side of a retry spawn, shared with the sharded spawn (spawn.py). ARGV: common(4), original
# id, attempt id (JSON), updated_at (JSON). ``already()`` tells whether the attempt exists. Returns
# {'spawned', left}, {'again', left} (this attempt was already spawned), {'spent'}, {'unknown'} or
# {'corrupt: <why>'}; {'cancelled'} once the chain was cancelled (its original carries ``_cancelled``, cancel.py).
MARK_RETRY = """
local function mark_retry(already)
  local okey = P .. ':task:' .. ARGV[5]
  local kind = redis.call('TYPE', okey)['ok']
  if kind == 'none' then return {'unknown'} end
  if kind ~= 'hash' then return {'corrupt: a Redis ' .. kind .. ', not a hash'} end
  if redis.call('HEXISTS', okey, '_cancelled') == 1 then return {'cancelled'} end
  local flat = redis.call('HMGET', okey, 'retry', 'latest_attempt_id')
  if flat[2] == ARGV[6] or already() then return {'again', flat[1] or '0'} end
  local left = tonumber(flat[1])
  if not left then return {'corrupt: bad retry field ' .. tostring(flat[1])} end
  if left <= 0 then return {'spent'} end
  left = left - 1
  redis.call('HSET', okey, 'retry', tostring(left), 'latest_attempt_id', ARGV[6], 'updated_at', ARGV[7])
  redis.call('PEXPIRE', okey, TTL)
  return {'spawned', tostring(left)}
end
"""

# ARGV: MARK_RETRY's, then one record (the attempt), in the original's shard. Returns MARK_RETRY's reply.
SPAWN_RETRY = (
    MARK_RETRY
    + """
local out = mark_retry(function() return redis.call('EXISTS', P .. ':task:' .. ARGV[8]) == 1 end)
if out[1] == 'spawned' then
  local id, name, pk, fields = read_record(8)
  create(id, name, pk, fields)
end
return out
"""
)

# ARGV: common(4), lease_ms, then task ids. Takes a lease (field _lease, server time in ms) on each record
# still unconfirmed whose lease is free or expired; returns the ids taken.
CLAIM = """
local now = now_ms()
local lease = tostring(now + tonumber(ARGV[5]))
local out = {}
for i = 6, #ARGV do
  local key = P .. ':task:' .. ARGV[i]
  if redis.call('TYPE', key)['ok'] == 'hash' then
    local f = redis.call('HMGET', key, 'status', '_lease')
    if f[1] and UNCONFIRMED[f[1]] and ((not f[2]) or (tonumber(f[2]) or 0) < now) then
      redis.call('HSET', key, '_lease', lease)
      out[#out + 1] = ARGV[i]
    end
  end
end
return out
"""

# ARGV: common(4), lease_ms, then task ids: sets the lease of every existing record.
RENEW = """
local lease = tostring(now_ms() + tonumber(ARGV[5]))
for i = 6, #ARGV do
  local key = P .. ':task:' .. ARGV[i]
  if redis.call('TYPE', key)['ok'] == 'hash' then redis.call('HSET', key, '_lease', lease) end
end
return 'ok'
"""


def _lua_table(entries: dict[str, object]) -> str:
    return ", ".join(f"[{_lua_string(key)}] = {value}" for key, value in entries.items())


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def encoded(status: Status) -> str:
    """A status as stored in a record hash: its JSON encoding."""
    return json.dumps(status.value)


def common() -> str:
    """The shared prelude, with the rank table generated from cogman.status.RANK."""
    return _COMMON % {
        "rank": _lua_table({encoded(s): rank for s, rank in RANK.items()}),
        "raw": _lua_table({encoded(s): _lua_string(s.value) for s in Status}),
        "final": _lua_table({encoded(s): "true" for s in FINAL}),
        "unconfirmed": _lua_table({encoded(s): "true" for s in UNCONFIRMED}),
        "early_ttl": EARLY_TTL_MS,
    }


def source(body: str) -> str:
    return common() + body


def record_args(record: TaskRecord) -> list[Any]:
    """One record as ``read_record`` reads it from ARGV."""
    fields = codec.hash_fields(record)
    pk = "0" if record.primary_key is None else "1" + record.primary_key
    return [record.task_id, record.name, pk, len(fields) // 2, *fields]


def create_args(common: list[Any], records: Sequence[TaskRecord]) -> tuple[list[Any], str]:
    """The ARGV of one CREATE call, and what it does for the logs (the first ids)."""
    args: list[Any] = [*common, len(records)]
    for record in records:
        args += record_args(record)
    ids = ", ".join(r.task_id for r in records[:3]) + (" ..." if len(records) > 3 else "")
    return args, f"create {len(records)} record(s) ({ids})"
