"""Prometheus metrics of a worker process, as Dramatiq's middleware: counters, a duration histogram and an
in-flight gauge per registered task name, and the process's publisher, broker connection and backend buffer.

Opt-in: ``App(..., metrics_port=9191)`` or ``cogman worker --metrics-port 9191`` (``pip install
cogman[api]`` for prometheus-client). The endpoint starts with the worker and stops with it.

With ``--processes N`` each process serves its own endpoint on ``metrics_port + i`` (i = 0..N-1): its
counters are its own, never a share of a parent's. Scrape every port (docs/api.md shows the config);
Prometheus sums them with ``sum by (task)``. This avoids prometheus-client's multiprocess mode, whose
files outlive crashed processes and whose gauges cannot read live values.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cogman.middleware.base import AppView, Middleware, WorkerView
from cogman.middleware.queue_stats import QueueSnapshot, metric_families, queue_snapshot

if TYPE_CHECKING:
    from cogman.message import Message

log = logging.getLogger("cogman.metrics")

INSTALL_HINT = "the Prometheus middleware needs prometheus-client: pip install cogman[api]"
#: Handler durations, from 5 ms to 15 min (Dramatiq's buckets, in seconds).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0,
                    60.0, 600.0, 900.0, float("inf"))  # fmt: skip
#: ``after_outcome`` names (execution.Outcome), each counted in ``cogman_attempts_<outcome>_total``.
OUTCOMES = ("succeeded", "failed", "retried", "dead_lettered", "skipped", "expired", "delayed", "requeued", "cancelled")
#: The one label value of every task name no worker of this process registers: anyone able to publish
#: could otherwise add a series (and its memory) per name they make up.
UNREGISTERED = "<unregistered>"
#: Seconds the queue figures of one scrape are served again (each read opens a broker connection).
QUEUE_CACHE_SECONDS = 5.0


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return prometheus_client


class Prometheus(Middleware):
    """Serves ``/metrics`` on ``host:port`` while a worker of this process runs (port 0: any free port,
    read back from ``.port``). ``host`` defaults to loopback: the counters name every task, so exposing
    them is a choice (``metrics_host``, ``--metrics-host 0.0.0.0``; docs/api.md)."""

    def __init__(self, port: int = 9191, *, host: str = "127.0.0.1") -> None:
        client = _prometheus()
        self.port = port
        self.host = host
        self.registry = client.CollectorRegistry(auto_describe=True)
        labels = ["task"]
        self.started = client.Counter(
            "cogman_attempts_started", "Attempts whose handler started.", labels, registry=self.registry
        )
        self.outcomes = {
            outcome: client.Counter(
                f"cogman_attempts_{outcome}", f"Deliveries settled as {outcome}.", labels, registry=self.registry
            )
            for outcome in OUTCOMES
        }
        self.duration = client.Histogram(
            "cogman_attempt_duration_seconds",
            "Time from the handler's start to its outcome being recorded.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = client.Gauge(
            "cogman_attempts_in_progress", "Handlers running now.", labels, registry=self.registry
        )
        self.registry.register(_ProcessCollector(self))
        self.workers: list[WorkerView] = []
        self._running: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._server: Any = None

    # WorkerView lifecycle: the endpoint lives while a worker of this process runs

    def worker_boot(self, worker: WorkerView) -> None:
        with self._lock:
            self.workers.append(worker)
            if self._server is not None:
                return
            self._server, _ = _prometheus().start_http_server(self.port, addr=self.host, registry=self.registry)
            self.port = self._server.server_port
        log.info("Prometheus metrics on http://%s:%d/metrics", self.host, self.port)

    def worker_shutdown(self, worker: WorkerView) -> None:
        with self._lock:
            if worker in self.workers:
                self.workers.remove(worker)
            server, self._server = (self._server, None) if not self.workers else (None, self._server)
        if server is not None:
            server.shutdown()
            server.server_close()

    # Task hooks

    def before_execute(self, message: Message) -> None:
        with self._lock:
            self._running[message.task_id] = (message.name, time.perf_counter())
        self.started.labels(message.name).inc()
        self.in_progress.labels(message.name).inc()

    def after_execute(self, message: Message, *, result: Any = None, exception: BaseException | None = None) -> None:
        self._finish(message, observe=True)

    def after_outcome(self, message: Message | None, outcome: str) -> None:
        if message is not None:
            self._finish(message, observe=False)  # after_execute is skipped when recording failed
        counter = self.outcomes.get(outcome)
        if counter is not None:
            counter.labels(self._label(message.name) if message is not None else "<undecodable>").inc()

    def _label(self, name: str) -> str:
        """``name`` when a worker of this process runs that task (before_execute only sees those), else
        UNREGISTERED: a dead-lettered message may carry any name."""
        return name if any(name in worker.app.tasks for worker in list(self.workers)) else UNREGISTERED

    def _finish(self, message: Message, *, observe: bool) -> None:
        with self._lock:
            running = self._running.pop(message.task_id, None)
        if running is None:
            return
        name, started = running
        try:
            if observe:
                self.duration.labels(name).observe(time.perf_counter() - started)
        finally:  # popped above: the gauge is decremented once, whatever observing did
            self.in_progress.labels(name).dec()


class _ProcessCollector:
    """Values read live at each scrape: the publisher's unconfirmed messages, broker reconnections, the
    backend's buffered writes, who this process is, and the queue figures (cached a few seconds)."""

    def __init__(self, middleware: Prometheus) -> None:
        self.middleware = middleware
        self._queues: tuple[float, QueueSnapshot] | None = None

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        workers = list(self.middleware.workers)
        info = GaugeMetricFamily("cogman_worker_info", "This worker process.", labels=["app", "host", "pid", "index"])
        index = os.environ.get("COGMAN_PROCESS_INDEX", "0")
        for app in {id(w.app): w.app for w in workers}.values():
            info.add_metric([app.name, socket.gethostname(), str(os.getpid()), index], 1)
        yield info
        if not workers:
            return
        app = workers[0].app
        broker = app.broker
        yield GaugeMetricFamily(
            "cogman_publisher_unconfirmed_messages",
            "Messages accepted by publish and not yet confirmed by the broker (offline outbox and in flight).",
            value=broker.pending(),
        )
        reconnects = sum(getattr(getattr(w, "_consumer", None), "reconnects", 0) or 0 for w in workers)
        reconnects += getattr(getattr(broker, "publisher", None), "reconnects", 0) or 0
        yield CounterMetricFamily(
            "cogman_broker_reconnects", "Reconnections to the broker after a lost connection.", value=reconnects
        )
        yield GaugeMetricFamily(
            "cogman_backend_buffered_writes",
            "Status writes held in memory while the backend is unreachable, replayed when it is back.",
            value=buffered_writes(app),
        )
        yield from self.queue_families(app)

    def queue_families(self, app: AppView) -> list[Any]:
        """The queue figures for autoscaling (queue_stats.py), read at most every QUEUE_CACHE_SECONDS;
        none while the broker or the backend cannot be read (logged)."""
        now = time.monotonic()
        if self._queues is None or now - self._queues[0] >= QUEUE_CACHE_SECONDS:
            try:
                self._queues = (now, queue_snapshot(app.broker, app.backend, app.config))
            except Exception as exc:
                log.warning("/metrics: queue figures not read: %s", exc)
                return []
        return metric_families(self._queues[1])


def buffered_writes(app: AppView) -> int:
    """Writes parked by the backend(s) of ``app`` (``buffer.pending``; 0 for stores that never buffer)."""
    backend: Any = app.backend
    backends = getattr(backend, "backends", None) or [backend]
    return sum(getattr(getattr(b, "buffer", None), "pending", 0) or 0 for b in backends)


def install_prometheus(app: AppView, port: int, host: str | None = None) -> Prometheus:
    """Make ``app``'s workers serve metrics on ``port``, and ``host`` if given: reuse its Prometheus
    middleware (keeping its host without one), or add one (on ``config.metrics_host`` without one)."""
    for middleware in app.middleware.middleware:
        if isinstance(middleware, Prometheus):
            middleware.port = port
            middleware.host = host or middleware.host
            return middleware
    middleware = Prometheus(port, host=host or app.config.metrics_host)
    app.middleware.middleware.append(middleware)
    return middleware
