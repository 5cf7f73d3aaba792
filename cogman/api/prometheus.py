"""The API's ``/metrics``: what the task log and the broker say, as Prometheus text.

Unlike the worker's middleware (cogman/middleware/prometheus.py), which counts what one process did, these are read
from the shared stores at scrape time: records per status and name (from the backend's indexes), the
durations of recent attempts, queue depths, workers alive (from heartbeats), and the autoscaling
figures of middleware/queue_stats.py (``cogman_queue_ready``, ``_unacked``, ``_oldest_age_seconds``).
A store that cannot be read is reported by ``cogman_up{component=...} 0`` and the scrape still
succeeds. The text is cached for a few seconds so several scrapers cost the stores one read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cogman.admin import actions as admin
from cogman.backends.base import TaskQuery
from cogman.middleware.prometheus import DURATION_BUCKETS
from cogman.middleware.queue_stats import metric_families, queue_snapshot
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.app import App

log = logging.getLogger("cogman.api")

#: Finished attempts per status read for the recent-durations histogram.
RECENT = 500
CACHE_SECONDS = 5.0


class ServerMetrics:
    def __init__(self, app: App, cache_seconds: float = CACHE_SECONDS) -> None:
        self.app = app
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, bytes] | None = None

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Snapshot(self.app))
            text = generate_latest(registry)
            self._cached = (time.monotonic(), text)
            return text


class _Snapshot:
    def __init__(self, app: App) -> None:
        self.app = app

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("cogman_up", "1 when the component answered this scrape.", labels=["component"])
        families: list[Any] = []
        backend_up = self._read(families, self._tasks)
        if backend_up:
            backend_up = self._read(families, self._durations) and self._read(families, self._workers)
        broker_up = self._read(families, self._queues)
        if broker_up and backend_up:
            self._read(families, self._queue_figures)
        up.add_metric(["backend"], 1 if backend_up else 0)
        up.add_metric(["broker"], 1 if broker_up else 0)
        yield up
        yield from families

    def _read(self, families: list[Any], reader: Any) -> bool:
        try:
            families.extend(reader())
            return True
        except Exception as exc:
            log.warning("/metrics: %s failed: %s", reader.__name__.strip("_"), exc)
            return False

    def _tasks(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        backend = self.app.backend
        by_status = GaugeMetricFamily("cogman_tasks", "Attempts recorded, by status.", labels=["status"])
        totals = {status: backend.query(TaskQuery(status=status, limit=0)).total for status in Status}
        for status, total in totals.items():
            by_status.add_metric([status.value], total)
        by_name = GaugeMetricFamily(
            "cogman_tasks_by_name", "Attempts recorded, by task name and status.", labels=["name", "status"]
        )
        for name in sorted(self.app.tasks):
            for status, total in totals.items():
                if total:
                    by_name.add_metric(
                        [name, status.value], backend.query(TaskQuery(status=status, name=name, limit=0)).total
                    )
        return [by_status, by_name]

    def _durations(self) -> list[Any]:
        from prometheus_client.core import HistogramMetricFamily

        durations: dict[str, list[float]] = {}
        for status in (Status.SUCCESS, Status.FAILED):
            for record in self.app.backend.query(TaskQuery(status=status, limit=RECENT)).records:
                if record.duration is not None:
                    durations.setdefault(record.name, []).append(record.duration)
        family = HistogramMetricFamily(
            "cogman_recent_attempt_duration_seconds",
            f"Durations of the latest {RECENT} succeeded and {RECENT} failed attempts (a sample, not a running count).",
            labels=["name"],
        )
        for name, values in sorted(durations.items()):
            buckets = [(_bound(b), float(sum(v <= b for v in values))) for b in DURATION_BUCKETS]
            family.add_metric([name], buckets, sum_value=sum(values))
        return [family]

    def _queues(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        ready = GaugeMetricFamily(
            "cogman_queue_messages_ready", "Messages waiting in a queue.", labels=["queue", "kind"]
        )
        consumers = GaugeMetricFamily("cogman_queue_consumers", "Consumers of a queue.", labels=["queue", "kind"])
        for queue in admin.queue_report(self.app).queues:
            ready.add_metric([queue.name, queue.kind], queue.ready)
            consumers.add_metric([queue.name, queue.kind], queue.consumers)
        return [ready, consumers]

    def _queue_figures(self) -> list[Any]:
        snapshot = queue_snapshot(self.app.broker, self.app.backend, self.app.config)
        return metric_families(snapshot, consumers=False)

    def _workers(self) -> list[Any]:
        from prometheus_client.core import GaugeMetricFamily

        workers = admin.live_workers(self.app)
        alive = GaugeMetricFamily("cogman_workers_alive", "Workers of this app whose heartbeat has not expired.")
        alive.add_metric([], len(workers))
        threads = GaugeMetricFamily("cogman_worker_concurrency", "Handler threads of the live workers.")
        threads.add_metric([], sum(int(w.get("concurrency") or 0) for w in workers))
        return [alive, threads]


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
