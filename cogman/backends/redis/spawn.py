"""Retry attempts: the spawn of one (the chain's original and the attempt may live in different shards)
and the reply of the START script, which reads the chain's budget.

On one Redis (or when both ids fall in one shard) the SPAWN_RETRY script spends one retry of the
original's budget and creates the attempt in one atomic step. Attempt ids are fixed before the backend
is asked (a uuid5 of the failed attempt's id, so a redelivered failure spawns the same one), so on a
sharded log the attempt is usually in another shard, another slot, which no script may touch with the
original. There the spawn is three idempotent steps instead:

1. the attempt's record exists already: ``again`` (nothing spent);
2. MARK on the original's slot spends one retry and writes the attempt's id as ``latest_attempt_id``,
   unless it is there already (``again``: spent by an earlier try of this same spawn);
3. on ``spawned`` and ``again``, the attempt's record is created in its own slot (a create never
   replaces a record that exists).

A process dying between 2 and 3 (or step 3 finding Redis unreachable, which raises BackendUnavailable as
the one-script spawn does) spent the retry without the record; the failure is redelivered (it was not
acked), step 2 answers ``again`` and step 3 creates the record: the budget is spent once, the attempt
recorded once. The START script reads a sharded attempt's budget from its original the same
way, apart (:func:`budget_of`).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from cogman.backends import codec
from cogman.backends.base import Started
from cogman.backends.redis import scripts
from cogman.record import utcnow
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.redis.wire import Link
    from cogman.record import TaskRecord

log = logging.getLogger("cogman.backends.redis")

# scripts.MARK_RETRY alone: the attempt is created in its own shard, by another call.
MARK = scripts.MARK_RETRY + "\nreturn mark_retry(function() return false end)\n"

_MARK = scripts.source(MARK)


def spawn_retry(link: Link, spawn: Any, create: Any, original_task_id: str, attempt: TaskRecord) -> int | None:
    """The retries left once the attempt is recorded; None when the budget is spent (or the original
    unknown or corrupt). SPAWN_RETRY (``spawn``), or the three steps (module docstring) with MARK and
    ``create`` (CREATE) when the attempt's shard is not the original's."""
    out = _spawn(link, spawn, create, original_task_id, attempt)
    kind = out[0].decode()
    if kind in ("spawned", "again"):
        return int(out[1])
    if kind.startswith("corrupt"):
        key = link.shards.of(original_task_id).task(original_task_id)
        log.error("no retry for task %s: corrupt record at %s (%s)", original_task_id, key, kind)
    return None


def _spawn(link: Link, spawn: Any, create: Any, original_task_id: str, attempt: TaskRecord) -> list[Any]:
    layout = link.shards.of(original_task_id)
    head = [*layout.common(), original_task_id, codec.dumps(attempt.task_id), codec.dumps(utcnow().isoformat())]
    what = f"spawn a retry of task {original_task_id}"
    home = link.shards.of(attempt.task_id)
    if home is layout:
        return link.buffer.call(link.script(spawn, [*head, *scripts.record_args(attempt)], layout), what)
    if link.buffer.call(lambda: link.client.exists(home.task(attempt.task_id)), what):
        left = link.buffer.call(lambda: link.client.hget(layout.task(original_task_id), "retry"), what)
        return [b"again", left or b"0"]
    mark = link.client.register_script(_MARK)
    out: list[Any] = link.buffer.call(link.script(mark, head, layout), what)
    if out[0] in (b"spawned", b"again"):
        args, _ = scripts.create_args(home.common(), [attempt])
        link.buffer.call(link.script(create, args, home), what)  # raises as the one-script spawn would
    return out


def started(link: Link, task_id: str, out: Any) -> Started | None:
    """What the START script's reply says (scripts.py); a sharded attempt's budget read from its original."""
    if not out:
        return None
    outcome, key = out[0].decode(), link.shards.of(task_id).task(task_id)
    if outcome.startswith("corrupt"):
        log.error("not starting task %s: corrupt record at %s (%s)", task_id, key, outcome)
        return None
    if outcome == "unknown":
        return None
    try:
        if out[4] == b"?":
            out[4] = budget_of(link, json.loads(out[2]))
        status, original, attempt, budget = (json.loads(value) for value in out[1:5])
        starts = int(out[5]) if len(out) > 5 else 1
        return Started(Status(status), str(original), int(attempt), max(0, int(budget or 0)), max(1, starts))
    except (TypeError, ValueError) as exc:
        log.error("task %s started over an unreadable record at %s: %s", task_id, key, exc)
        return None


def budget_of(link: Link, original_task_id: Any) -> bytes:
    """The ``retry`` field of a chain's original record as stored (JSON), ``b"0"`` when missing."""
    if not isinstance(original_task_id, str):
        return b"0"
    key = link.shards.of(original_task_id).task(original_task_id)
    raw = link.buffer.call(lambda: link.client.hget(key, "retry"), f"read the retry budget of task {original_task_id}")
    return raw or b"0"  # type: ignore[return-value]
