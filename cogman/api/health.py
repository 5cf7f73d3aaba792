"""``/healthz``'s verdict, kept for ``HEALTHZ_CACHE_SECONDS``: one probe opens a fresh broker connection
and declares every queue passively (31 declares), and ``/healthz`` needs no token, so a probe per call
would let anyone who reaches the port load RabbitMQ. Probes of several callers at once wait for one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cogman.app import App

HEALTHZ_CACHE_SECONDS = 2.0


class Health:
    def __init__(
        self, app: App, ttl: float = HEALTHZ_CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.app = app
        self.ttl = ttl
        #: A seam: tests move time without sleeping.
        self.clock = clock
        self._lock = threading.Lock()
        self._verdict: tuple[float, dict[str, bool]] | None = None

    def checks(self) -> dict[str, bool]:
        """``{"backend": ok, "broker": ok}``, probed at most once per ``ttl``, a failure as an answer."""
        with self._lock:
            if self._verdict is not None and self.clock() - self._verdict[0] < self.ttl:
                return self._verdict[1]
            checks = {
                "backend": _answers(lambda: self.app.backend.get("cogman-healthz")),
                "broker": _answers(self.app.broker.queue_stats),
            }
            self._verdict = (self.clock(), checks)
            return checks


def _answers(probe: Callable[[], Any]) -> bool:
    try:
        probe()
        return True
    except Exception:
        return False
