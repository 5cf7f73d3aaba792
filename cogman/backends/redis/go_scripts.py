"""The Lua scripts of the Go-format records in Redis (cogman/backends/redis/go_records.py): each reads
Go's JSON record, applies Go's rule (a status must outrank the current one, the ranks passed in from
:data:`cogman.gowire.record.GO_RANK`), and writes the whole record back in Go's encoding with its TTL,
in one step. ``_ENCODE`` re-encodes a record field by field as Go's ``encoding/json`` does (Go's field
order, its string escapes, ``Duration`` kept as the text it was).
"""

from __future__ import annotations

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

#: ARGV: key, in_progress, its Go rank, the ranks (JSON), UpdatedAt, TTL seconds, the final statuses
#: (JSON), the starts key, the token key, the delivery's token ("" counts each call). Reply: {kind,
#: record or "", starts}: kind "moved" | "kept" | "unknown" | "corrupt"; starts 0 on a final record.
START = (
    _ENCODE
    + r"""
local raw, t, duration = load(ARGV[1])
local kind, value = 'unknown', ''
if raw and not t then kind = 'corrupt'
elseif raw then
  local ranks = cjson.decode(ARGV[4])
  if tonumber(ARGV[3]) <= (ranks[t.Status] or 0) then kind, value = 'kept', raw
  else
    t.Status = ARGV[2]
    t.UpdatedAt = ARGV[5]
    value = encode(t, duration)
    redis.call('SET', ARGV[1], value, 'EX', tonumber(ARGV[6]))
    kind = 'moved'
  end
end
local starts = 0
local final = cjson.decode(ARGV[7])
if not (t and final[t.Status]) then
  if ARGV[10] ~= '' and redis.call('GET', ARGV[9]) == ARGV[10] then
    starts = tonumber(redis.call('GET', ARGV[8])) or 1
  else
    starts = redis.call('INCR', ARGV[8])
    redis.call('EXPIRE', ARGV[8], tonumber(ARGV[6]))
    redis.call('SET', ARGV[9], ARGV[10], 'EX', tonumber(ARGV[6]))
  end
end
return {kind, value, starts}
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

#: ARGV: key, count, UpdatedAt, TTL seconds. Reply: {"added", the budget then} | {"unknown"} | {"corrupt"}
#: (Go's ``Retry`` may be negative: its ``/retry`` takes any count).
ADD_RETRIES = (
    _ENCODE
    + r"""
local raw, t, duration = load(ARGV[1])
if not raw then return {'unknown'} end
if not t then return {'corrupt'} end
t.Retry = (tonumber(t.Retry) or 0) + tonumber(ARGV[2])
t.UpdatedAt = ARGV[3]
redis.call('SET', ARGV[1], encode(t, duration), 'EX', tonumber(ARGV[4]))
return {'added', t.Retry}
"""
)
