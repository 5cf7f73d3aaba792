"""The error side of the API: Cogman's envelope, the status code of each failure, and a last-resort
handler so no request ever ends in a bare 500 or an empty reply.

``{"errors": [{"id": "<10 chars>", "message": "..."}]}``; a 400 adds ``"field"``, the input at fault.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cogman.admin.actions import NotRetryable, RetryBudgetRace
from cogman.errors import (
    BackendUnavailable,
    BrokerAccessRefused,
    BrokerUnavailable,
    CorruptRecord,
    NotCancellable,
    TaskNotFound,
)

log = logging.getLogger("cogman.api")

_LETTERS = string.ascii_letters
_ID_CHARS = string.ascii_letters + string.digits


def error_id() -> str:
    """Cogman's error id: 10 random characters, the first a letter."""
    return secrets.choice(_LETTERS) + "".join(secrets.choice(_ID_CHARS) for _ in range(9))


def envelope(message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"id": error_id(), "message": message}
    if field is not None:
        error["field"] = field
    return {"errors": [error]}


def error_response(
    status: int, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(envelope(message, field), status_code=status, headers=headers)


class ApiError(Exception):
    """Raised by a route to answer ``status`` with ``message`` (and the ``field`` at fault for a 400)."""

    def __init__(
        self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers


def _validation_message(error: dict[str, Any]) -> tuple[str, str]:
    """(field, message) of one pydantic error: ``query parameter 'limit': Input should be ...``."""
    location: Sequence[Any] = error.get("loc", ())
    where = location[0] if location else "request"
    names = [str(part) for part in location[1:]]
    field = ".".join(names) or str(where)
    kind = {"query": "query parameter", "body": "body field", "header": "header"}.get(str(where), str(where))
    if where == "body" and not names:
        return "body", f"request body: {error.get('msg', 'invalid')}"
    return field, f"{kind} {field!r}: {error.get('msg', 'invalid')}"


def install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: RequestValidationError) -> Response:
        errors = list(exc.errors()) or [{"loc": ("request",), "msg": "invalid request"}]
        body = {"errors": []}  # type: dict[str, list[dict[str, Any]]]
        for error in errors:
            field, message = _validation_message(error)
            body["errors"].append({"id": error_id(), "message": message, "field": field})
        return JSONResponse(body, status_code=400)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        elif exc.status_code == 404:
            message = f"no route {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, headers=dict(exc.headers or {}))

    @api.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, field=exc.field, headers=exc.headers)

    @api.exception_handler(TaskNotFound)
    async def not_found(request: Request, exc: TaskNotFound) -> Response:
        return error_response(404, f"task not found: {exc.task_id}")

    @api.exception_handler(NotRetryable)
    async def conflict(request: Request, exc: NotRetryable) -> Response:
        return error_response(409, str(exc))

    @api.exception_handler(NotCancellable)
    async def not_cancellable(request: Request, exc: NotCancellable) -> Response:
        return error_response(409, str(exc))

    @api.exception_handler(RetryBudgetRace)
    async def race(request: Request, exc: RetryBudgetRace) -> Response:
        return error_response(409, str(exc))

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("%s %s: a service is unavailable: %s", request.method, request.url.path, exc)
        return error_response(503, f"service unavailable: {exc}", headers={"Retry-After": "5"})

    for kind in (BackendUnavailable, BrokerUnavailable, BrokerAccessRefused, ConnectionError, TimeoutError):
        api.add_exception_handler(kind, unavailable)

    @api.exception_handler(CorruptRecord)
    async def corrupt(request: Request, exc: CorruptRecord) -> Response:
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return error_response(500, str(exc))


class CatchAll:
    """ASGI middleware: an exception no handler took becomes a 500 in the envelope (logged with its
    traceback), instead of a bare text page or a dropped connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:
                return  # the status line is out: nothing better can be sent than closing the response
            response = error_response(500, f"internal error: {type(exc).__name__}: {exc}")
            await response(scope, receive, send)


class EnvelopeCORS(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the envelope too."""

    def preflight_response(self, request_headers: Any) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
        return error_response(response.status_code, bytes(response.body).decode(), headers=headers)
