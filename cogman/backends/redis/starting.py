"""A worker's ``in_progress`` write, sent before its handler runs and read after (``Backend.start_soon``).

The START script (scripts.py) goes out on the handler thread's "starting" connection, which nothing else
uses in between (a handler that sends tasks writes on "pending"), so the handler runs while Redis moves the
record; its reply is read once the handler returned, before the outcome is written. Where that cannot hold,
the start is written the usual way: at once when replicas must acknowledge it (WAIT) or writes are parked
(an outage: it queues behind them), and on reading when the early send or its reply met an unreachable
store (the delivery's token keeps the second write from counting a second start).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cogman.backends import codec
from cogman.backends.redis import scripts
from cogman.backends.redis.spawn import started
from cogman.backends.redis.wire import is_transient
from cogman.record import utcnow
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.base import Started
    from cogman.backends.redis.keys import KeyLayout
    from cogman.backends.redis.shards import Shards
    from cogman.backends.redis.wire import Link, ScriptCaller


def arguments(shards: Shards, task_id: str, token: str) -> tuple[KeyLayout, list[Any]]:
    """The START script's shard and ARGV for ``task_id``."""
    layout = shards.of(task_id)
    args = [*layout.common(), scripts.encoded(Status.IN_PROGRESS), codec.dumps(utcnow().isoformat()), task_id]
    args += ["1" if shards.tagged else "0", token]  # tagged: the original's budget is read apart
    return layout, args


def start_soon(link: Link, caller: ScriptCaller, script: Any, task_id: str, token: str) -> Callable[[], Started | None]:
    layout, args = arguments(link.shards, task_id, token)
    again = link.script(script, args, layout)
    what = f"move task {task_id} to in_progress"

    def written() -> Started | None:
        return started(link, task_id, link.buffer.write(again, what))

    if caller.replication is not None or link.buffer.pending:
        now = written()
        return lambda: now
    try:
        reply: Callable[[], Any] | None = caller.send(script, args, layout.route, "starting", alone=True)
    except Exception as exc:
        if not is_transient(exc):
            raise
        return written

    def read() -> Started | None:
        nonlocal reply
        if reply is None:  # called again (a full outage buffer raised): write it the usual way
            return written()
        pending, reply = reply, None
        try:
            out = pending()
        except Exception as exc:
            if not is_transient(exc):
                raise
            return written()
        return started(link, task_id, out)

    return read
