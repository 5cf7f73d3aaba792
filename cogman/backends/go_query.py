"""Listing and counting Go-format tasks beside cogman's (issue 22), on the reader's side: the REST API's
``/list`` and ``/daterangecount`` (so the dashboard) and ``cogman list`` call these instead of
``Backend.query`` / ``count_by_status``, which stay cogman's own. The merge is here once, not in every
backend, and the readers that must not see Go records (re-enqueue's sweep, periodic claims) never pay
for it.

Go keeps no index in Redis, so the Go records come from ``GoRecords.recent`` (the ``MAX_LISTED``
newest it can find; cogman/gowire/store.py) and are filtered and counted in process: fine for the
Go-format tasks of a migration, not for millions of them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from cogman.backends.base import Backend, StatusBucket, TaskPage, TaskQuery, buckets_from_counts
from cogman.errors import ConfigError
from cogman.gowire.store import GoRecords
from cogman.record import TaskRecord


def go_names(tasks: Mapping[str, Any]) -> frozenset[str]:
    """The names of an app's ``wire="go"`` tasks (``app.tasks``): the Go records of those a Go process
    wrote are listed beside the app's own (``GoRecords.recent``)."""
    return frozenset(name for name, task in tasks.items() if getattr(task, "wire", None) == "go")


def list_tasks(backend: Backend, query: TaskQuery, names: Collection[str] = ()) -> TaskPage:
    """``backend.query(query)`` with the matching Go records merged in, newest first: those a cogman
    process created or started, and those of the Go-format tasks ``names`` a Go process wrote."""
    records = _go_records(backend)
    if records is None:
        return backend.query(query)
    return with_go_records(query, backend.query, records, names)


def count_tasks(
    backend: Backend, start: datetime, end: datetime, bucket_seconds: float, names: Collection[str] = ()
) -> list[StatusBucket]:
    """``backend.count_by_status`` with the Go records created in ``[start, end]`` counted in (those
    ``list_tasks`` lists)."""
    counted = backend.count_by_status(start, end, bucket_seconds)
    records = _go_records(backend)
    if records is None:
        return counted
    buckets = {round((b.start - start).total_seconds() / bucket_seconds): dict(b.counts) for b in counted}
    for task in _as_tasks(records, names):
        if start <= task.created_at <= end:
            counts = buckets.setdefault(_index(task.created_at, start, bucket_seconds), {})
            counts[task.status] = counts.get(task.status, 0) + 1
    return buckets_from_counts(start, bucket_seconds, buckets)


def with_go_records(
    query: TaskQuery, cogman_query: Callable[[TaskQuery], TaskPage], records: GoRecords, names: Collection[str] = ()
) -> TaskPage:
    """``cogman_query(query)``, with the matching Go records merged into the page and the total."""
    matching = [task for task in _as_tasks(records, names) if query.matches(task)]
    if not matching:
        return cogman_query(query)
    head = cogman_query(replace(query, skip=0, limit=query.skip + query.limit))
    merged = sorted([*head.records, *matching], key=lambda task: task.created_at, reverse=True)
    return TaskPage(records=merged[query.skip : query.skip + query.limit], total=head.total + len(matching))


def _go_records(backend: Backend) -> GoRecords | None:
    """The backend's Go records; None on a Redis Cluster, which holds none (docs/go-interop.md)."""
    try:
        return backend.go_records()
    except ConfigError:
        return None


def _as_tasks(records: GoRecords, names: Collection[str]) -> list[TaskRecord]:
    return [record.to_task_record() for record in records.recent(frozenset(names))]


def _index(moment: datetime, start: datetime, bucket_seconds: float) -> int:
    return int((moment - start).total_seconds() // bucket_seconds)
