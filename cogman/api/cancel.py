"""``POST /cancel`` (issue 23): one task by id, or in bulk every task matching a name and a status.

Behind the token like ``/retry``. A task that had finished already is a 409 naming its status (nothing
changed), an unknown id a 404, a Go-format task a 409 too (Go Cogman's records cannot be cancelled).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from cogman.admin.cancel import BULK_LIMIT, CANCELLABLE, cancel_matching, cancel_or_refuse
from cogman.api.errors import ApiError
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.app import App


class CancelRequest(BaseModel):
    """``{"task_id": "..."}``, or a bulk cancel: ``{"name": "...", "status": "queued"}`` (either or both)."""

    task_id: str | None = Field(None, min_length=1, max_length=200, description="Any attempt of the task's chain.")
    name: str | None = Field(None, min_length=1, max_length=500, description="Bulk: every task with this name.")
    status: Status | None = Field(None, description="Bulk: only tasks in this status (not a final one).")
    limit: int = Field(BULK_LIMIT, ge=1, le=BULK_LIMIT, description="Bulk: most records read.")

    @model_validator(mode="after")
    def one_form(self) -> CancelRequest:
        bulk = self.name is not None or self.status is not None
        if (self.task_id is not None) == bulk:
            raise ValueError("give task_id, or name and/or status for a bulk cancel (not both)")
        return self


def cancel_routes(app: App) -> APIRouter:
    router = APIRouter()

    @router.post("/cancel", summary="Cancel a task (409 if it had finished), or every task matching name/status")
    def cancel(request: Annotated[CancelRequest, Body()]) -> JSONResponse:
        if request.task_id is not None:
            cancel_or_refuse(app.backend, request.task_id)
            return JSONResponse({"data": {"task_id": request.task_id, "status": Status.CANCELLED.value}})
        if request.status is not None and request.status not in CANCELLABLE:
            raise ApiError(400, f"status {request.status.value!r} is final: it cannot be cancelled", "status")
        report = cancel_matching(app.backend, name=request.name, status=request.status, limit=request.limit)
        body = {"cancelled": report.cancelled, "skipped": report.skipped, "more": report.more}
        return JSONResponse({"data": body, "meta": {"total": len(report.cancelled)}})

    return router
