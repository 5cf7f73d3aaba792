"""``create_app(app)``: the ASGI application of the REST API and the dashboard.

Routes: the seed's (routes.py), ``/ping`` and ``/healthz`` (never behind the token), ``/metrics``,
``/openapi.json``, and the dashboard at ``/`` (static files in cogman/api/static; the page holds no
data, it asks for the token and reads the API like any client).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cogman import __version__
from cogman.api.auth import token_guard
from cogman.api.cancel import cancel_routes
from cogman.api.errors import CatchAll, EnvelopeCORS, error_response, install_error_handlers
from cogman.api.guard import RequestGuard, check_settings
from cogman.api.health import Health
from cogman.api.prometheus import ServerMetrics
from cogman.api.routes import data_routes

if TYPE_CHECKING:
    from cogman.app import App

STATIC = Path(__file__).parent / "static"
#: The seed's answer, kept for its probes.
PING = "Hello, Cogman alive!!!"
#: No inline script, no third-party origin: a string that slipped through escaping still cannot run.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_DEFAULT: Any = object()


def create_app(
    app: App, *, token: str | None = _DEFAULT, cors_origins: Sequence[str] | None = None, insecure: bool = False
) -> FastAPI:
    """The API of ``app``. ``token`` and ``cors_origins`` default to ``app.config.api_token`` and
    ``app.config.api_cors_origins``. Embedded or served by ``cogman api``, the same rules hold
    (guard.py): without a token, only loopback addresses and names; ``insecure`` is ``--insecure``.
    Raises ``InsecureSettings`` for a token no client can send, or ``*`` origins without a token."""
    token = (app.config.api_token if token is _DEFAULT else token) or None
    origins = list(app.config.api_cors_origins if cors_origins is None else cors_origins)
    check_settings(token, origins)
    api = FastAPI(
        title="cogman",
        version=__version__,
        description="Tasks, queues and workers of a cogman app. Errors: {errors: [{id, message}]}.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(api)
    guard = Depends(token_guard(token))
    metrics = ServerMetrics(app)

    @api.get("/ping", response_class=PlainTextResponse, summary="The API process is alive (no token needed)")
    def ping() -> str:
        return PING

    api.state.health = health = Health(app)

    @api.get("/healthz", summary="The backend and the broker answer (no token needed): 200, else 503")
    def healthz() -> Response:
        checks = health.checks()
        if all(checks.values()):
            return JSONResponse({"data": {name: "ok" for name in checks}})
        down = ", ".join(name for name, ok in checks.items() if not ok)
        return error_response(503, f"unreachable: {down}", headers={"Retry-After": "5"})

    api.include_router(data_routes(app), dependencies=[guard])
    api.include_router(cancel_routes(app), dependencies=[guard])

    @api.get("/metrics", dependencies=[guard], response_class=PlainTextResponse, summary="Prometheus text")
    def prometheus_metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/openapi.json", dependencies=[guard], include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(api.openapi())

    @api.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    api.add_middleware(CatchAll)
    api.add_middleware(RequestGuard, token=token, insecure=insecure)
    api.add_middleware(SecurityHeaders)
    api.add_middleware(
        EnvelopeCORS,
        allow_origins=origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )
    return api


class SecurityHeaders:
    """CSP and friends on every response: the dashboard runs only its own script, in no frame."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)
