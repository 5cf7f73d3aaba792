"""WorkerView heartbeats: every few seconds a worker writes who it is and what it has done to the backend.

Orchestrators and operators then see which workers are alive without talking to them: ``cogman ping``
(a Kubernetes probe), ``cogman workers``, and the API's ``/metrics``. The heartbeat is a middleware, so
it starts and stops with the worker; ``AppView`` installs one by default. A heartbeat that cannot be written
(the backend is away) is logged and tried again at the next beat: it never holds up a task.

The heartbeats also tell which app each worker serves and which queues it consumes: a worker starting
on queues that a worker of another app consumes on the same broker is warned (each would take the
other's tasks and dead-letter them as unknown). It only sees workers reporting to the same backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from typing import Any

from cogman.brokers.base import queue_names
from cogman.middleware.base import Middleware, WorkerView
from cogman.priority import Priority
from cogman.record import utcnow

log = logging.getLogger("cogman.heartbeat")

#: A heartbeat is forgotten after this many intervals without a new one (a worker killed hard).
TTL_INTERVALS = 3
#: ... and never sooner than this, so ``cogman ping --within 30`` sees a worker beating every 5 s.
MIN_TTL = 30.0
#: Set by ``--processes`` in each child: its index, shown in the heartbeat (and used for metrics ports).
PROCESS_INDEX_ENV = "COGMAN_PROCESS_INDEX"


def heartbeat_ttl(interval: float) -> float:
    return max(MIN_TTL, TTL_INTERVALS * interval)


class Heartbeat(Middleware):
    """Starts a heartbeat thread at ``worker_boot`` and stops it (and forgets the worker) at
    ``worker_shutdown``. ``interval`` None means ``config.heartbeat_interval``; 0 turns it off."""

    def __init__(self, interval: float | None = None) -> None:
        self.interval = interval
        self._beats: dict[int, _Beat] = {}
        self._lock = threading.Lock()

    def worker_boot(self, worker: WorkerView) -> None:
        interval = worker.app.config.heartbeat_interval if self.interval is None else self.interval
        if interval <= 0:  # no heartbeat thread to look for other apps in: a thread of its own
            threading.Thread(target=_advise, args=(worker,), name="cogman-app-check", daemon=True).start()
            return
        beat = _Beat(worker, interval)
        with self._lock:
            self._beats[id(worker)] = beat
        beat.start()

    def worker_shutdown(self, worker: WorkerView) -> None:
        with self._lock:
            beat = self._beats.pop(id(worker), None)
        if beat is not None:
            beat.stop()

    def worker_ids(self) -> list[str]:
        """The ids under which this process's running workers report."""
        with self._lock:
            return [beat.worker_id for beat in self._beats.values()]


class _Beat:
    """One worker's heartbeat thread."""

    def __init__(self, worker: WorkerView, interval: float) -> None:
        self.worker = worker
        self.interval = interval
        self.ttl = heartbeat_ttl(interval)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.worker_id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.started_at = utcnow().isoformat()
        self._stop = threading.Event()
        self._last_ok: bool | None = None  # None: not tried yet
        self._thread = threading.Thread(target=self._run, name="cogman-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 10)
        if not self._last_ok:
            return  # never written, or the backend was away at the last beat: do not block the stop on it
        try:
            self.worker.app.backend.forget_worker(self.worker_id)
        except Exception as exc:
            log.warning("could not remove the heartbeat of worker %s (%s); it expires by itself", self.worker_id, exc)

    def info(self) -> dict[str, Any]:
        from cogman import __version__

        worker = self.worker
        lock = getattr(worker, "_outcomes_lock", None) or contextlib.nullcontext()
        with lock:
            outcomes = {str(outcome): count for outcome, count in worker.outcomes.items()}
        index = os.environ.get(PROCESS_INDEX_ENV)
        return {
            "id": self.worker_id,
            "app": worker.app.name,
            "host": self.host,
            "pid": self.pid,
            "process_index": int(index) if index and index.isdigit() else None,
            "priorities": [p.value for p in worker.priorities],
            "queues": consumed_queues(worker),
            "unacked": held_deliveries(worker),
            "broker": broker_location(worker.app.config.broker_url),
            "concurrency": worker.concurrency,
            "tasks_done": sum(outcomes.values()),
            "outcomes": outcomes,
            "started_at": self.started_at,
            "last_seen": utcnow().isoformat(),
            "interval": self.interval,
            "version": __version__,
        }

    def beat(self) -> None:
        try:
            self.worker.app.backend.record_heartbeat(self.worker_id, self.info(), self.ttl)
        except Exception as exc:
            if self._last_ok is not False:
                log.warning("worker heartbeat not written (%s); trying again in %.0f s", exc, self.interval)
            self._last_ok = False
            return
        self._last_ok = True

    def _run(self) -> None:
        _advise(self.worker)  # before the first beat, off the worker's start: the backend may be slow
        try:
            while True:
                self.beat()
                if self._stop.wait(self.interval):
                    return
        except BaseException:
            log.critical("the heartbeat thread of worker %s died; `cogman ping` will not see it", self.worker_id,
                         exc_info=True)  # fmt: skip


def consumed_queues(worker: WorkerView) -> list[str]:
    config = worker.app.config
    counts = {Priority.HIGH: config.high_priority_queue_count, Priority.LOW: config.low_priority_queue_count}
    return [name for p in worker.priorities for name in queue_names(p, counts[p], config.queue_prefix)]


def held_deliveries(worker: WorkerView) -> dict[str, int]:
    """The deliveries this worker holds unacked, per queue (cogman/brokers/held.py); {} before it consumes."""
    held = getattr(getattr(worker, "_consumer", None), "held", None)
    return held() if callable(held) else {}


def broker_location(url: str) -> str:
    """``host:port/vhost`` of each URL (no user, no password): which workers can take each other's tasks."""
    return ";".join(part.split("://", 1)[-1].rsplit("@", 1)[-1].split("?")[0] for part in url.split(";"))


def _advise(worker: WorkerView) -> None:
    """The top of a thread: whatever goes wrong in the check is logged, never fatal to the caller."""
    try:
        warn_of_other_apps(worker)
    except BaseException:
        log.error("could not look for workers of other apps on these queues", exc_info=True)


def warn_of_other_apps(worker: WorkerView) -> list[dict[str, Any]]:
    """Warn of each live worker of another app that consumes queues this worker consumes, on the same
    broker as far as its heartbeat says (one without a ``broker`` counts): Cogman's queue names are the
    same for every app, so a worker of app "shop" left running on the vhost of app "bench" dead-letters
    bench's tasks as unknown. Returns those workers' heartbeats. A backend that cannot list them is
    logged and the worker starts anyway: this is advice, not a condition to run."""
    app = worker.app
    if app.config.broker_url.startswith("memory://"):
        return []  # a memory:// broker is this process's own
    mine, here = set(consumed_queues(worker)), broker_location(app.config.broker_url)
    try:
        workers = app.backend.live_workers()
    except Exception as exc:
        log.info("could not list the workers to look for other apps on these queues (%s)", exc)
        return []
    others = []
    for other in workers:
        queues = other.get("queues")
        shared = sorted(mine.intersection(q for q in queues if isinstance(q, str))) if isinstance(queues, list) else []
        if other.get("app") == app.name or not shared or other.get("broker", here) != here:
            continue
        others.append(other)
        log.warning(
            "worker %s of app %r (on %s) already consumes %s, which this worker of app %r consumes too: each "
            "takes the other's tasks and dead-letters those it does not know. Give each app its own vhost "
            "(or set queue_prefix)",
            other.get("id"), other.get("app"), other.get("host"), ", ".join(shared), app.name,
        )  # fmt: skip
    return others
