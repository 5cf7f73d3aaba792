"""The memory backend's worker heartbeats: each kept as Redis keeps it (JSON) until its TTL passes."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from cogman.backends import codec


class Heartbeats:
    """Worker id -> (its last heartbeat, when it expires), behind a lock of its own."""

    def __init__(self) -> None:
        self._beats: dict[str, tuple[dict[str, Any], float]] = {}
        self._lock = threading.Lock()

    def record(self, worker_id: str, info: dict[str, Any], ttl: float) -> None:
        copy = json.loads(codec.dumps(info))  # as Redis keeps it: JSON
        with self._lock:
            self._drop_dead()
            self._beats[worker_id] = (copy, time.monotonic() + ttl)

    def live(self) -> list[dict[str, Any]]:
        with self._lock:
            self._drop_dead()
            return [json.loads(codec.dumps(info)) for info, _ in self._beats.values()]

    def forget(self, worker_id: str) -> None:
        with self._lock:
            self._beats.pop(worker_id, None)

    def _drop_dead(self) -> None:
        now = time.monotonic()
        for worker_id in [w for w, (_, expires) in self._beats.items() if expires <= now]:
            del self._beats[worker_id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._beats)
