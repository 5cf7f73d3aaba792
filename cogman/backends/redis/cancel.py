"""Cancel on Redis (issue 23): one script on the chain's original, and the workers' poll.

CANCEL runs in the original's slot. It reads ``latest_attempt_id``; when the latest attempt lives in the
same slot (one Redis, or the original itself) it moves that attempt to ``cancelled`` unless it is final,
and sets ``_cancelled`` on the original, in the same atomic step. MARK_RETRY (scripts.py) refuses a
chain whose original carries ``_cancelled``, so a retry the worker spawns while the cancel runs is
either spawned first (and then cancelled by the pointer this script reads) or refused: never both
missed. On a sharded log the latest attempt may live in another slot: the mark is set first, then the
attempt is moved by a second call (a chain whose attempt finished in between is left marked).

CANCELLED_AMONG answers a worker's poll: of the ids it runs, those recorded ``cancelled``, one call per
shard that holds any of them (one round trip on one Redis).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cogman.backends import codec
from cogman.backends.redis import scripts
from cogman.record import utcnow
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.redis.wire import Link

log = logging.getLogger("cogman.backends.redis")

# ARGV: common(4), original id, updated_at (JSON), '1' when the latest attempt is in this slot, the
# cancelled status (JSON), its history field. Returns {'unknown'}, {'corrupt: <why>'}, {'final', status,
# latest} (nothing changed), {'cancelled', status before, latest} or {'elsewhere', '', latest}.
CANCEL = """
local id = ARGV[5]
local okey = P .. ':task:' .. id
local kind = redis.call('TYPE', okey)['ok']
if kind == 'none' then return {'unknown'} end
if kind ~= 'hash' then return {'corrupt: a Redis ' .. kind .. ', not a hash'} end
local latest = id
local pointer = redis.call('HGET', okey, 'latest_attempt_id')
if pointer then
  local ok, value = pcall(cjson.decode, pointer)
  if ok and type(value) == 'string' then latest = value end
end
if latest ~= id and ARGV[7] ~= '1' then
  redis.call('HSET', okey, '_cancelled', '1')
  return {'elsewhere', '', latest}
end
local cur = redis.call('HGET', P .. ':task:' .. latest, 'status')
if cur and FINAL[cur] then return {'final', cur, latest} end
redis.call('HSET', okey, '_cancelled', '1')
transition(latest, ARGV[8], {'updated_at', ARGV[6], ARGV[9], ARGV[6]})
return {'cancelled', cur or '"retry"', latest}
"""

# ARGV: common(4), the cancelled status (JSON), then task ids. Returns the ids recorded with that status.
CANCELLED_AMONG = """
local out = {}
for i = 6, #ARGV do
  if redis.call('HGET', P .. ':task:' .. ARGV[i], 'status') == ARGV[5] then out[#out + 1] = ARGV[i] end
end
return out
"""

_CANCEL = scripts.source(CANCEL)
_AMONG = scripts.source(CANCELLED_AMONG)
_TRANSITION = scripts.source(scripts.TRANSITION)


def cancel(link: Link, task_id: str) -> Status | None:
    """Backend.cancel on Redis: the latest attempt's status before the call, None if unknown."""
    what = f"cancel task {task_id}"
    raw = link.buffer.call(lambda: link.client.hget(link.shards.of(task_id).task(task_id), "original_task_id"), what)
    if raw is None:
        return None
    original = json.loads(raw)
    original = original if isinstance(original, str) else task_id
    layout = link.shards.of(original)
    now = codec.dumps(utcnow().isoformat())
    local = "0" if link.shards.tagged else "1"
    args = [*layout.common(), original, now, local, scripts.encoded(Status.CANCELLED), codec.AT + "cancelled"]
    out: list[Any] = link.buffer.call(link.script(link.client.register_script(_CANCEL), args, layout), what)
    kind = out[0].decode()
    if kind == "unknown":
        return None
    if kind.startswith("corrupt"):
        log.error("not cancelling task %s: corrupt record at %s (%s)", task_id, layout.task(original), kind)
        return None
    if kind in ("final", "cancelled"):
        return Status(json.loads(out[1]))
    return _cancel_elsewhere(link, out[2].decode(), now, what)


def _cancel_elsewhere(link: Link, latest: str, now: str, what: str) -> Status:
    """A sharded chain's latest attempt, in its own slot (the original is marked already)."""
    home = link.shards.of(latest)
    raw = link.buffer.call(lambda: link.client.hget(home.task(latest), "status"), what)
    before = Status(json.loads(raw)) if raw else Status.RETRY  # not created yet: its create applies the cancel
    if not before.is_final:
        fields = ["updated_at", now, codec.AT + "cancelled", now]
        args = [*home.common(), scripts.encoded(Status.CANCELLED), "0", 2, *fields, latest]
        link.buffer.call(link.script(link.client.register_script(_TRANSITION), args, home), what)
    return before


def cancelled_among(link: Link, task_ids: Sequence[str]) -> list[str]:
    """Backend.cancelled_among on Redis: one script call per shard holding any of the ids."""
    found: list[str] = []
    script = link.client.register_script(_AMONG)
    for layout, members in link.shards.group(task_ids):
        args = [*layout.common(), scripts.encoded(Status.CANCELLED), *members]
        out = link.buffer.call(link.script(script, args, layout), "read which running tasks are cancelled")
        found += [task_id.decode() for task_id in out]
    return found


class RedisCancel:
    """The cancel primitives of :class:`~cogman.backends.redis.backend.RedisBackend`."""

    if TYPE_CHECKING:

        def _link(self) -> Link: ...

    def cancel(self, task_id: str) -> Status | None:
        return cancel(self._link(), task_id)

    def cancelled_among(self, task_ids: Sequence[str]) -> list[str]:
        return cancelled_among(self._link(), task_ids) if task_ids else []
