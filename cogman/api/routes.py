"""The seed's routes (``/get``, ``/list``, ``/daterangecount``, ``/info``, ``/retry``), with its names
and envelope, answered from the task log and the broker through the protocols.

Handlers are plain functions: FastAPI runs them in its thread pool, as the backends block.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cogman.admin import actions as admin
from cogman.api.errors import ApiError
from cogman.backends import go_query
from cogman.backends.base import TaskQuery
from cogman.errors import TaskNotFound
from cogman.middleware.queue_stats import queue_snapshot
from cogman.record import utcnow
from cogman.status import Status
from cogman.worker.admission import waiting_note

if TYPE_CHECKING:
    from cogman.app import App
    from cogman.record import TaskRecord

#: Dates outside this range are refused (400) rather than overflowing the stores' arithmetic.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
MAX_LIMIT = 1000
#: A list row (``/list``, ``/get``'s ``meta.attempts``) carries at most this many characters of each of
#: BULKY_FIELDS (a non-string payload or result counted as its JSON), then a marker; ``/get``'s ``data``
#: is the whole record. 1000 rows stay a few megabytes whatever the tasks carry.
LIST_FIELD_CHARS = 1000
BULKY_FIELDS = ("payload", "result", "fail_error", "traceback")
MAX_SKIP = 1_000_000_000
MAX_BUCKETS = 10_000
#: The seed's bucket keys, per status.
BUCKET_KEYS = {
    Status.RETRY: "CountRetry",
    Status.INITIATED: "CountInitiated",
    Status.QUEUED: "CountQueued",
    Status.IN_PROGRESS: "CountInProgress",
    Status.SUCCESS: "CountSuccess",
    Status.FAILED: "CountFailed",
    Status.CANCELLED: "CountCancelled",
}


class RetryRequest(BaseModel):
    """``POST /retry``: run the task again now, with ``retry - 1`` automatic retries left after it."""

    task_id: str = Field(min_length=1, max_length=200, description="Any attempt of the task's chain.")
    retry: int = Field(1, ge=1, le=1000, description="Retries added to the chain's budget; one runs now.")
    force: bool = Field(False, description="Run it again even if its latest attempt has not failed.")


def data(value: Any, meta: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"data": value}
    if meta is not None:
        body["meta"] = meta
    return JSONResponse(body)


def list_row(record: TaskRecord) -> dict[str, Any]:
    """The record with its bulky fields cut to LIST_FIELD_CHARS; ``truncated`` names the fields cut."""
    row = record.to_dict()
    cut = []
    for name in BULKY_FIELDS:
        value = row[name]
        if value is None:
            continue
        text = (
            value
            if isinstance(value, str)
            else json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
        )
        if len(text) > LIST_FIELD_CHARS:
            row[name] = (
                f"{text[:LIST_FIELD_CHARS]}...[truncated {len(text) - LIST_FIELD_CHARS} characters, whole on /get]"
            )
            cut.append(name)
    if cut:
        row["truncated"] = cut
    return row


def moment(value: datetime | None, field: str) -> datetime | None:
    """An input date as an aware UTC-comparable datetime (naive ones are UTC), within EARLIEST..LATEST."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not EARLIEST <= value <= LATEST:
        raise ApiError(400, f"{field} must lie between {EARLIEST.date()} and {LATEST.date()}", field)
    return value


def data_routes(app: App) -> APIRouter:
    router = APIRouter()

    @router.get("/get", summary="One attempt's record, and its retry chain in meta")
    def get(task_id: Annotated[str, Query(min_length=1, max_length=200)]) -> JSONResponse:
        record = app.backend.get(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        attempts = admin.chain(app.backend, task_id)
        latest = max(attempts, key=lambda r: (r.attempt, r.created_at))
        return data(
            record.to_dict(),
            {
                "latest_attempt_id": latest.task_id,
                "attempts": [list_row(r) for r in attempts],
                "waiting": waiting_note(app.backend, record),  # over a rate limit or concurrency (docs/control.md)
            },
        )

    @router.get("/list", summary="Records, newest first, filtered and paged; meta.total counts the matches")
    def list_tasks(
        task_id: Annotated[str | None, Query(max_length=200)] = None,
        status: Status | None = None,
        primary_key: Annotated[str | None, Query(max_length=500)] = None,
        name: Annotated[str | None, Query(max_length=500)] = None,
        start_date: Annotated[datetime | None, Query(alias="startDate", description="RFC 3339, inclusive")] = None,
        end_date: Annotated[datetime | None, Query(alias="endDate", description="RFC 3339, inclusive")] = None,
        skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
        limit: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = 10,
    ) -> JSONResponse:
        start, end = moment(start_date, "startDate"), moment(end_date, "endDate")
        if start is not None and end is not None and start > end:
            raise ApiError(400, "startDate must not be after endDate", "startDate")
        query = TaskQuery(
            status=status,
            name=name or None,
            primary_key=primary_key or None,
            created_after=start,
            created_before=end,
            skip=skip,
            limit=limit,
        )
        if task_id:
            record = app.backend.get(task_id)
            matching = [record] if record is not None and query.matches(record) else []
            records, total = matching[skip : skip + limit], len(matching)
        else:
            page = go_query.list_tasks(app.backend, query, go_query.go_names(app.tasks))  # with Go-format tasks
            records, total = page.records, page.total
        return data([list_row(r) for r in records], {"total": total, "skip": skip, "limit": limit})

    @router.get("/daterangecount", summary="Records created per interval, per status (empty buckets left out)")
    def date_range_count(
        start_date: Annotated[datetime | None, Query(alias="startDate", description="default: 30 days ago")] = None,
        end_date: Annotated[datetime | None, Query(alias="endDate", description="default: now")] = None,
        interval: Annotated[int, Query(ge=1, le=60 * 24 * 366, description="bucket width in minutes")] = 1440,
    ) -> JSONResponse:
        end = moment(end_date, "endDate") or utcnow()
        start = moment(start_date, "startDate") or end - timedelta(days=30)
        if start > end:
            raise ApiError(400, "startDate must not be after endDate", "startDate")
        buckets = (end - start).total_seconds() / (interval * 60)
        if buckets > MAX_BUCKETS:
            raise ApiError(400, f"interval too small: {buckets:.0f} buckets, at most {MAX_BUCKETS}", "interval")
        counted = go_query.count_tasks(app.backend, start, end, interval * 60.0, go_query.go_names(app.tasks))
        rows = []
        for bucket in counted:
            row: dict[str, Any] = {"ID": bucket.start.isoformat(), "Total": bucket.total}
            row.update({key: bucket.counts.get(status, 0) for status, key in BUCKET_KEYS.items()})
            rows.append(row)
        meta = {"startDate": start.isoformat(), "endDate": end.isoformat(), "interval": interval}
        return data(rows, meta)

    @router.get("/info", summary="Each queue's ready messages and consumers, with totals")
    def info() -> JSONResponse:
        report = admin.queue_report(app)
        return data(
            {
                "app": app.name,
                "total_queue": report.total_queue,
                "total_task": report.total_ready,
                "total_consumers": report.total_consumers,
                "dead_letters": report.dead_letters,
                "delayed": report.delayed,
                "queues": [
                    {"name": q.name, "kind": q.kind, "ready": q.ready, "consumers": q.consumers, "exists": q.exists}
                    for q in report.listed  # the ladder's 28 levels are the one figure above
                ],
            }
        )

    @router.get("/stats", summary="Per task queue: ready, unacked, consumers, the oldest waiting task's age")
    def stats() -> JSONResponse:
        """For autoscalers (docs/operations.md); what each figure means: cogman/middleware/queue_stats.py."""
        return data(queue_snapshot(app.broker, app.backend, app.config).to_dict())

    @router.post("/retry", summary="Run a failed task again now (409 unless failed, or force)")
    def retry(request: Annotated[RetryRequest, Body()]) -> JSONResponse:
        attempt = admin.retry_task(app, request.task_id, retries=request.retry, force=request.force)
        return data(attempt.to_dict())

    @router.get("/workers", summary="Workers whose heartbeat has not expired")
    def workers(within: Annotated[float | None, Query(gt=0, le=86400)] = None) -> JSONResponse:
        found = admin.live_workers(app, within=within)
        return data(found, {"total": len(found)})

    return router
