"""Queue figures for autoscaling (issue 23): for each task queue, messages ready, unacked, consumers, and
how long the oldest task waiting to start has waited. Read by the API (``GET /stats``, ``/metrics``),
the worker's ``/metrics`` (prometheus.py) and ``cogman queues``; docs/operations.md says what each means.

- ``ready`` and ``consumers``: the broker (``Broker.queue_stats``: RabbitMQ's passive ``queue_declare``,
  the memory broker's deques).
- ``unacked``: RabbitMQ reports it only through the management plugin, so each worker counts the
  deliveries it holds (cogman/brokers/held.py) and its heartbeat reports them; this is their sum over the
  live workers on the same broker, as of each one's last heartbeat (``heartbeat_interval`` old at most).
  A worker without heartbeats, or of an app reporting to another backend, is not counted.
- ``oldest_age_seconds``: from the task log, the records in ``queued``. A record names its priority
  family, not its queue: the publisher picks a queue of the family round robin and records nothing, and
  a worker consumes every queue of its families; so each queue of a family shows the family's figure. A
  task delayed (``countdown``/``eta``, a retry's backoff) waits to start from its ``eta``: before it, it
  is not counted. Only the ``scan`` oldest queued records are read (an index read: ``oldest_queued``);
  when those cannot settle it (many delayed tasks ahead), ``oldest_exact`` is False and the age is a
  lower bound. None when no task of the family waits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cogman.middleware.heartbeat import broker_location
from cogman.priority import Priority
from cogman.record import utcnow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cogman.backends.base import Backend
    from cogman.brokers.base import Broker
    from cogman.config import Config
    from cogman.record import TaskRecord

#: Oldest queued records read to find each family's oldest waiting task.
OLDEST_SCAN = 500


@dataclass(frozen=True, slots=True)
class QueueFigures:
    name: str
    #: The priority family: ``high`` or ``low``.
    kind: str
    ready: int
    unacked: int
    consumers: int
    oldest_age_seconds: float | None
    #: False when the queue was never declared (no worker or client used it yet).
    exists: bool = True


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    queues: list[QueueFigures]
    #: False when ``oldest_age_seconds`` are lower bounds (see the module's docstring).
    oldest_exact: bool
    #: Live workers whose heartbeats gave ``unacked``.
    reporting_workers: int
    read_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """``total``: ready, unacked and consumers summed over the queues, the oldest age their maximum
        (what one autoscaler trigger reads: ``data.total.ready`` in ``GET /stats``)."""
        ages = [q.oldest_age_seconds for q in self.queues if q.oldest_age_seconds is not None]
        return {
            "total": {
                "ready": sum(q.ready for q in self.queues),
                "unacked": sum(q.unacked for q in self.queues),
                "consumers": sum(q.consumers for q in self.queues),
                "oldest_age_seconds": max(ages, default=None),
            },
            "queues": [asdict(queue) for queue in self.queues],
            "oldest_exact": self.oldest_exact,
            "reporting_workers": self.reporting_workers,
            "read_at": self.read_at.isoformat(),
        }


def queue_snapshot(
    broker: Broker, backend: Backend, config: Config, *, now: datetime | None = None, scan: int = OLDEST_SCAN
) -> QueueSnapshot:
    """Read the broker, the heartbeats and the task log once each. Raises BrokerUnavailable or
    BackendUnavailable when one is away."""
    queues = [q for q in broker.queue_stats() if q.kind in (Priority.HIGH.value, Priority.LOW.value)]
    here = broker_location(config.broker_url)
    workers = [
        w for w in backend.live_workers() if w.get("broker", here) == here and isinstance(w.get("unacked"), dict)
    ]
    unacked: dict[str, int] = {}
    for worker in workers:
        for queue, count in worker["unacked"].items():
            if isinstance(count, int):
                unacked[str(queue)] = unacked.get(str(queue), 0) + count
    now = now or utcnow()
    records = backend.oldest_queued(scan)
    oldest, exact = oldest_waiting(records, now, complete=len(records) < scan)
    figures = [
        QueueFigures(
            name=q.name,
            kind=q.kind,
            ready=q.ready,
            unacked=unacked.get(q.name, 0),
            consumers=q.consumers,
            oldest_age_seconds=_age(now, oldest.get(Priority(q.kind))),
            exists=q.exists,
        )
        for q in queues
    ]
    return QueueSnapshot(figures, exact, len(workers), now)


def oldest_waiting(
    records: Sequence[TaskRecord], now: datetime, *, complete: bool
) -> tuple[dict[Priority, datetime], bool]:
    """Per family, the earliest moment a queued task became ready to start (``max(created_at, eta)``),
    from ``records`` in ``created_at`` order; and whether that is exact: a family is settled once a record
    created at or after its best so far is reached (every later one became ready later), and all are
    when ``complete`` (``records`` are every queued record)."""
    best: dict[Priority, datetime] = {}
    for record in records:
        if all(p in best and record.created_at >= best[p] for p in Priority):
            return best, True
        ready_at = max(record.created_at, record.eta) if record.eta is not None else record.created_at
        if ready_at > now:
            continue
        if record.priority not in best or ready_at < best[record.priority]:
            best[record.priority] = ready_at
    return best, complete


def _age(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


def metric_families(snapshot: QueueSnapshot, *, consumers: bool = True) -> list[Any]:
    """The Prometheus gauges of a snapshot, labelled ``queue`` and ``kind``; a family with no waiting
    task has an oldest age of 0. ``consumers`` False leaves out ``cogman_queue_consumers`` (the API's
    ``/metrics`` has it for every queue already)."""
    from prometheus_client.core import GaugeMetricFamily

    labels = ["queue", "kind"]
    families = {
        "ready": GaugeMetricFamily("cogman_queue_ready", "Messages ready in a task queue.", labels=labels),
        "unacked": GaugeMetricFamily(
            "cogman_queue_unacked",
            "Deliveries held unacked by the live workers, as their last heartbeats report them.",
            labels=labels,
        ),
        "consumers": GaugeMetricFamily("cogman_queue_consumers", "Consumers of a task queue.", labels=labels),
        "oldest": GaugeMetricFamily(
            "cogman_queue_oldest_age_seconds",
            "Seconds the oldest task of the queue's priority family has waited to start (0: none waits).",
            labels=labels,
        ),
    }
    for queue in snapshot.queues:
        values = {"ready": queue.ready, "unacked": queue.unacked, "consumers": queue.consumers,
                  "oldest": queue.oldest_age_seconds or 0.0}  # fmt: skip
        for key, family in families.items():
            family.add_metric([queue.name, queue.kind], values[key])
    return [family for key, family in families.items() if consumers or key != "consumers"]
