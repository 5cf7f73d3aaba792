"""The key layout of the Redis task log, shared by the backend and its helpers so they cannot disagree.

Every key starts with ``redis_prefix``, so two apps (or a test and a production app) can share one Redis
database; the Lua scripts build the same names from the prefix they are given (scripts.py), and
docs/backends.md lists them all. Index entries older than the TTL are out of the window: trimmed by the
writes and never returned by the reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cogman.backends.codec import to_us
from cogman.record import utcnow

#: How long the wake-up token of a finished task stays, for waiters that read the record just before.
DONE_TTL_MS = 300_000


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """The key names under one prefix, and the TTL of a record and its index entries. ``route``: the
    KEYS a script call on this layout passes, so that a Redis Cluster runs it on the node owning the
    layout's slot (shards.py); empty for the unsharded layout of one Redis."""

    prefix: str
    ttl_ms: int
    route: tuple[str, ...] = ()

    def task(self, task_id: str) -> str:
        return f"{self.prefix}:task:{task_id}"

    def index(self, kind: str, value: str | None = None) -> str:
        """``<prefix>:idx:all``, ``:idx:status:<status>``, ``:idx:name:<name>``, ``:idx:pk:<key>``, and
        ``:idx:ns:<status>:<name as JSON>`` (docs/backends.md)."""
        return f"{self.prefix}:idx:{kind}" if value is None else f"{self.prefix}:idx:{kind}:{value}"

    def done(self, task_id: str) -> str:
        """The wake-up list a waiter blocks on, pushed by the script that makes the task final."""
        return f"{self.prefix}:done:{task_id}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    def workers(self) -> str:
        """The sorted set of worker ids by last heartbeat, so listing the workers needs no SCAN."""
        return f"{self.prefix}:workers"

    def wait_mark(self) -> str:
        """The key written before each WAIT (``redis_wait_replicas``, wire.py), so WAIT covers the write."""
        return f"{self.prefix}:wait-mark"

    def window_floor(self) -> int:
        """Index entries created before this are out of the TTL window: trimmed and never returned."""
        return to_us(utcnow()) - self.ttl_ms * 1000

    def common(self) -> list[Any]:
        """The four ARGV values every state-change script starts with (scripts.py)."""
        return [self.prefix, self.ttl_ms, f"({self.window_floor()}", DONE_TTL_MS]
