"""Rate limits and concurrency slots in Redis: the Redis backend's ``limits()``.

Each step is one Lua script on one key, timed by the server's clock (``TIME``), so workers on machines
whose clocks disagree still share one window:

- ``<prefix>:limit:rate:<scope>``: a sorted set of the starts of the last window (member: the start's
  token, score: microseconds). A start is admitted when fewer than ``count`` remain after dropping
  those older than the window: a sliding log, so no window of that length ever holds more.
- ``<prefix>:limit:slots:<scope>``: a sorted set of holders scored by the expiry of their lease; expired
  ones are dropped before counting, so a worker killed with SIGKILL frees its slots within the lease.
- ``<prefix>:limit:waiting:<task id>``: why a task waits, with a TTL.

Every key carries a TTL a little past what it can still matter, so idle scopes vanish. Calls go
through the write buffer's ``call`` (bounded retries, then BackendUnavailable), never parked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cogman.limits.policy import Rate

if TYPE_CHECKING:
    from cogman.backends.redis.wire import Link

_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"

# KEYS: the log. ARGV: count, period (us), token. Returns 0 (admitted; also for a token already logged,
# a call retried after a lost reply) or the microseconds to wait.
TAKE_START = (
    _NOW
    + """
local count, period = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 0 end
local n = redis.call('ZCARD', KEYS[1])
if n < count then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], n - count, n - count, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + period - now)
"""
)

# KEYS: the slots. ARGV: limit, lease (us), holder. Returns 1 (held) or 0 (all taken).
ACQUIRE = (
    _NOW
    + """
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease / 1000) + 1000)
  return 1
end
return 0
"""
)

# KEYS: the slots. ARGV: lease (us), holder. Returns 1 (renewed) or 0 (the lease had expired: not taken back).
RENEW = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease / 1000) + 1000)
return 1
"""
)


class RedisLimits:
    def __init__(self, link: Link) -> None:
        self.link = link
        self.prefix = link.keys.prefix
        register = link.client.register_script
        self._take, self._acquire, self._renew = register(TAKE_START), register(ACQUIRE), register(RENEW)

    def take_start(self, scope: str, rate: Rate, token: str) -> float:
        args = [rate.count, int(rate.period * 1_000_000), token]
        waited = self._call(self._take, self._key("rate", scope), args, f"take a start of {scope} ({rate})")
        return int(waited) / 1_000_000

    def acquire_slot(self, scope: str, holder: str, limit: int, lease: float) -> bool:
        args = [limit, _micros(lease), holder]
        return bool(self._call(self._acquire, self._key("slots", scope), args, f"take a slot of {scope}"))

    def renew_slots(self, held: Sequence[tuple[str, str]], lease: float) -> list[tuple[str, str]]:
        lost = []
        for scope, holder in held:
            if not self._call(self._renew, self._key("slots", scope), [_micros(lease), holder], f"renew {scope}"):
                lost.append((scope, holder))
        return lost

    def release_slot(self, scope: str, holder: str) -> None:
        key = self._key("slots", scope)
        self.link.buffer.call(lambda: self.link.client.zrem(key, holder), f"free a slot of {scope}")

    def note_waiting(self, task_id: str, reason: str, ttl: float) -> None:
        key = self._key("waiting", task_id)
        px = max(1, math.ceil(ttl * 1000))
        self.link.buffer.call(lambda: self.link.client.set(key, reason, px=px), f"note why {task_id} waits")

    def waiting(self, task_id: str) -> str | None:
        key = self._key("waiting", task_id)
        raw: Any = self.link.buffer.call(lambda: self.link.client.get(key), f"read why {task_id} waits")
        return None if raw is None else raw.decode() if isinstance(raw, bytes) else str(raw)

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:limit:{kind}:{name}"

    def _call(self, script: Any, key: str, args: list[Any], what: str) -> Any:
        return self.link.buffer.call(lambda: script(keys=[key], args=args), what)


def _micros(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1_000_000))


def store_of(backend: Any) -> RedisLimits:
    """The backend's one store, made on first use, so its scripts are registered once."""
    store: RedisLimits | None = backend.__dict__.get("_limit_store")
    if store is None:
        store = backend.__dict__.setdefault("_limit_store", RedisLimits(backend._link()))
    return store
