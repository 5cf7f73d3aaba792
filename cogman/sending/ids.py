"""Random ids (task ids, a delivery's start token) from the OS's random source, read 4 KiB at a time.

``uuid.uuid4()`` reads 16 bytes with a system call that releases the GIL: in a process where another
thread is busy (the lean profile's background sender, a worker's handler threads) the caller then waits
to get the GIL back, up to the interpreter's switch interval (5 ms), on every call. Here one read serves
256 ids. A forked child starts with an empty pool, so parent and child never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading
import uuid

#: Ids served by one read of the OS's random source.
POOL_IDS = 256
_SIZE = 16


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.buffer = b""
        self.at = 0

    def take(self) -> bytes:
        with self.lock:
            if self.at >= len(self.buffer):
                self.buffer, self.at = os.urandom(_SIZE * POOL_IDS), 0
            start = self.at
            self.at = start + _SIZE
            return self.buffer[start : start + _SIZE]


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.reset)


def random_uuid() -> uuid.UUID:
    """A version 4 UUID, as ``uuid.uuid4()`` makes it."""
    return uuid.UUID(bytes=_pool.take(), version=4)


def new_task_id() -> str:
    return str(random_uuid())


def new_token() -> str:
    return random_uuid().hex
