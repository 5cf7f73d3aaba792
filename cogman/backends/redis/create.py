"""The create of a send, overlapped with the publish: Redis writes the records while the caller publishes.

A batch goes out in slices, each sent as soon as it is encoded and none awaited before the publish, so
Redis works on the first slice while the sender still encodes the rest and then publishes (replies come
back in order on the thread's own connection). docs/performance.md has ``send_many``'s rate before and
after.

What each failure does:
- a mistake (not an outage) found while sending the *first* slice raises before the publish: nothing
  was written, nothing published;
- an outage while sending, or a reply that does not come: that slice and every later one take the
  write path of any write (retried, then parked in memory; the script is idempotent, so a slice Redis
  did run is harmless to run again), and the caller waits for the broker's confirms if one was parked
  (``create`` returns False); a failover's error reply (``READONLY``, ``BUSY``...) sends that slice
  alone down the write path, and the later replies are still read;
- a mistake found while sending a later slice, or in a reply: the other slices are still read or
  written, and the first mistake is raised after the publish: those records may be missing, which the
  worker handles as a foreign producer's task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis

from cogman.backends.redis import scripts
from cogman.backends.redis.wire import is_transient

if TYPE_CHECKING:
    from cogman.backends.redis.keys import KeyLayout
    from cogman.backends.redis.wire import Link, ScriptCaller
    from cogman.record import TaskRecord

#: Records per slice: small enough that Redis starts early, large enough that each EVALSHA carries many.
SLICE = 100


class _Slice:
    __slots__ = ("args", "layout", "reply", "what")

    def __init__(self, args: list[Any], what: str, reply: Callable[[], Any] | None, layout: KeyLayout) -> None:
        self.args, self.what, self.reply, self.layout = args, what, reply, layout


def create_overlapped(
    link: Link, caller: ScriptCaller, create: Any, records: Sequence[TaskRecord], meanwhile: Callable[[], object]
) -> bool:
    """Run the CREATE script (``create``, registered on ``link.client``) over ``records`` while ``meanwhile``
    publishes; ``caller`` sends the slices without waiting. True when every record is in Redis; False when
    some were parked (an outage)."""
    slices: list[_Slice] = []
    mistake: Exception | None = None
    sending = True  # a failed send closed the connection: the slices after it are not sent
    pieces = [
        (layout, members[start : start + SLICE])
        for layout, members in link.shards.group(records, _task_id)
        for start in range(0, len(members), SLICE)
    ]
    for layout, piece in pieces:  # one shard's records per slice (sharded log: one slot per script)
        args, what = scripts.create_args(layout.common(), piece)
        reply: Callable[[], Any] | None = None
        if sending:
            try:
                reply = caller.send(create, args, layout.route) if layout.route else caller.send(create, args)
            except Exception as exc:
                sending = False
                if not is_transient(exc):
                    if not slices:
                        raise
                    mistake = exc
        slices.append(_Slice(args, what, reply, layout))
    try:
        meanwhile()
    finally:
        durable = _finish(link, caller, create, slices, mistake)
    return durable


def _finish(link: Link, caller: ScriptCaller, create: Any, slices: list[_Slice], mistake: Exception | None) -> bool:
    """Read every reply in order on this thread (never the replay thread's business: a parked write runs
    the whole call again). A slice not sent, or whose reply did not come, takes the write path."""
    durable = True
    outage = False  # the connection is gone: no later reply can be read from it
    for piece in slices:
        if piece.reply is not None and not outage:
            try:
                piece.reply()
                continue
            except redis.ResponseError as exc:  # an answer: the connection is still in step
                if not is_transient(exc):
                    mistake = mistake or exc
                    continue
            except Exception as exc:  # no answer (or none usable): later replies are not read
                outage = True
                caller.abandon_replies()
                if not is_transient(exc):
                    mistake = mistake or exc
                    continue
        try:
            durable &= link.buffer.write(link.script(create, piece.args, piece.layout), piece.what) is not None
        except Exception as exc:  # a mistake, or the buffer full: raised once every slice was tried
            mistake = mistake or exc
    if mistake is not None:
        raise mistake
    return durable


def _task_id(record: TaskRecord) -> str:
    return record.task_id
