"""Workflows and periodic tasks in Redis: the claim of a record (``create_new``) and the chord's set.

``create_new`` runs the same ``create`` Lua function as every create (insert if absent, early stubs,
indexes) and returns whether this call created the record. A chord's set is the hash
``<prefix>:chord:<chord id>``, member index to outcome (JSON): ``HSETNX`` keeps a redelivered member's
first outcome, and the count is read in the same script, so of two members finishing at the same time
on two workers, the one whose write completes the set is seen by both as complete, never by neither.
The hash lives as long as a record (``redis_ttl``) after its last join.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cogman.backends.redis import scripts

if TYPE_CHECKING:
    from cogman.backends.redis.wire import Link
    from cogman.record import TaskRecord

# ARGV: common(4), then one record as read by read_record. Returns 'created' or 'exists'.
CREATE_NEW = """
local id, name, pk, fields = read_record(5)
return create(id, name, pk, fields)
"""

# ARGV: common(4), chord id, member index, size, outcome. Returns nil while members are missing, else the
# hash as a flat list (index, outcome, ...).
JOIN_CHORD = """
local key = P .. ':chord:' .. ARGV[5]
redis.call('HSETNX', key, ARGV[6], ARGV[8])
redis.call('PEXPIRE', key, TTL)
if redis.call('HLEN', key) < tonumber(ARGV[7]) then return false end
return redis.call('HGETALL', key)
"""

_CREATE_NEW = scripts.source(CREATE_NEW)
_JOIN_CHORD = scripts.source(JOIN_CHORD)


def create_new(link: Link, record: TaskRecord) -> bool:
    script = link.client.register_script(_CREATE_NEW)
    layout = link.shards.of(record.task_id)
    args: list[Any] = [*layout.common(), *scripts.record_args(record)]
    outcome = link.buffer.call(link.script(script, args, layout), f"create task {record.task_id} if new")
    return bytes(outcome) == b"created"


def join_chord(link: Link, chord_id: str, index: int, size: int, outcome: str) -> list[str] | None:
    if not 0 <= index < size:
        raise ValueError(f"chord member index {index} is outside 0..{size - 1}")
    script = link.client.register_script(_JOIN_CHORD)
    layout = link.shards.of(chord_id)  # the chord's set lives in the chord id's shard
    args: list[Any] = [*layout.common(), chord_id, index, size, outcome]
    flat = link.buffer.call(link.script(script, args, layout), f"join member {index} to chord {chord_id}")
    if flat is None:
        return None
    outcomes = {int(flat[i]): flat[i + 1].decode() for i in range(0, len(flat), 2)}
    return [outcomes[i] for i in range(size)]


class RedisWorkflows:
    """These functions as :class:`~cogman.backends.redis.backend.RedisBackend`'s methods."""

    if TYPE_CHECKING:

        def _link(self) -> Link: ...

    def create_new(self, record: TaskRecord) -> bool:
        return create_new(self._link(), record)

    def join_chord(self, chord_id: str, index: int, size: int, outcome: str) -> list[str] | None:
        return join_chord(self._link(), chord_id, index, size, outcome)
