"""What keeps the memory backend honest to Redis: Redis's field encoding, and expiry by TTL.

A test that passes on ``memory://`` should pass on Redis: so a record stored in memory is what Redis would
give back (:func:`stored`), a read hands out a copy as a fresh decode would (:func:`handed_out`), and
entries expire after their TTL (:class:`Deadlines`) or once done with (:func:`sent`), so a long-running
process stays bounded.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable

from cogman.backends import codec
from cogman.record import TaskRecord
from cogman.status import Status


class Deadlines:
    """Keys in the order of their last touch, each expiring ``ttl`` seconds after it. Every key has the
    same ``ttl``, so the first key is always the next to expire: touching and expiring cost O(1) each."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def touch(self, key: str) -> None:
        self._until[key] = self.clock() + self.ttl
        self._until.move_to_end(key)

    def discard(self, key: str) -> None:
        self._until.pop(key, None)

    def expired(self) -> list[str]:
        """The keys whose time is up, removed from here."""
        if not self._until:
            return []
        now = self.clock()
        gone = []
        while self._until:
            key, until = next(iter(self._until.items()))
            if until > now:
                break
            self._until.popitem(last=False)
            gone.append(key)
        return gone


def stored(record: TaskRecord) -> TaskRecord:
    """The record as Redis gives it back: every field through its JSON text in a Redis hash."""
    fields = codec.hash_fields(record)
    flat = {fields[i].encode(): fields[i + 1].encode() for i in range(0, len(fields), 2)}
    return codec.from_hash(flat, record.task_id)


def handed_out(record: TaskRecord) -> TaskRecord:
    """A copy whose payload and result its caller may change without changing the store, as each read
    from Redis decodes anew."""
    result = record.result
    if isinstance(result, list | dict):
        result = json.loads(codec.dumps(result))
    return record.evolve(payload=json.loads(codec.dumps(record.payload)), result=result)


def sent(callback: TaskRecord) -> bool:
    """Whether a chord's callback record stands for a decided chord: anything but "not run" (a failed
    member's mark, which a manual retry of that member replaces, so the chord's set must stay)."""
    from cogman.signature import NOT_RUN  # a workflow concept; imported late, no import cycle

    return not (callback.status is Status.FAILED and (callback.fail_error or "").startswith(NOT_RUN))
