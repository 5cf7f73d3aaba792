"""What the API checks before a request reaches FastAPI, in one pure ASGI middleware, so that a refused
request costs no body read (FastAPI reads and parses a whole body before any dependency runs).

- **Without a token**, being reachable from this machine only is the API's sole protection, and a
  browser crosses it: a page whose DNS name is re-pointed at 127.0.0.1 (DNS rebinding) calls the API
  as its own origin. Its requests name that page's host in ``Host``, so only loopback names are
  answered (421). A request that arrived on a non-loopback address is refused too (403), the bind
  check of ``cogman api`` for an app embedded in another server. ``insecure`` lifts the address
  check and also admits IP literals in ``Host``: no DNS answer can make a page's host one.
- **The token** is read from the raw header bytes, before the body, on every route but ``/ping``,
  ``/healthz`` and the dashboard's static page (401).
- **A body** (of a POST, PUT, PATCH or DELETE) is read here, ``max_body`` bytes at most (413 past
  them), and must be sent as ``Content-Type: application/json`` (415): a cross-site page may send
  ``text/plain`` or no type at all without a CORS preflight, but not JSON. The app then gets it whole.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cogman.api.auth import is_loopback
from cogman.api.errors import error_response
from cogman.errors import CogmanError

#: The largest request body read (``POST /retry`` sends about 100 bytes); larger ones get 413.
MAX_BODY_BYTES = 64 * 1024
#: Served without the token: probes, and the dashboard page, which holds no data and asks for it.
OPEN_PATHS = frozenset({"/ping", "/healthz", "/"})
OPEN_PREFIX = "/static/"
#: Methods whose body is read here (at most ``max_body`` bytes) and must be JSON when not empty.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class InsecureSettings(CogmanError):
    """API settings that would let any web page use the API, or a token no client can send."""


def check_settings(token: str | None, origins: Sequence[str]) -> None:
    """Refuse, when the API is made, what no request-time check could make safe."""
    if token:
        bad = next((i for i, char in enumerate(token) if not "\x21" <= char <= "\x7e"), None)
        if bad is not None:
            raise InsecureSettings(
                f"api_token: character {bad + 1} of {len(token)} is not visible ASCII (letters, digits, "
                "punctuation): the token travels in an HTTP header, where browsers and servers disagree on "
                "other characters, so it could never match"
            )
    elif "*" in origins:
        raise InsecureSettings(
            "refusing CORS origin '*' without an API token: any web page could read every task and re-run "
            "them. Set COGMAN_API_TOKEN (or api_token=...), or list the origins allowed."
        )


def host_name(host: str) -> str:
    """The name of a ``Host`` header, without its port: ``[::1]:8081`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class RequestGuard:
    def __init__(self, app: ASGIApp, *, token: str | None, insecure: bool, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.expected = token.encode("ascii") if token else None
        self.insecure = insecure
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._origin_refusal(scope, headers) or self._token_refusal(scope) or self._size_refusal(headers)
        if refusal is None and scope["method"] in BODY_METHODS:
            body = await self._read_body(receive)
            if body is None:
                return  # the client went away: nobody to answer
            content_type = headers.get("content-type")
            if len(body) > self.max_body:
                refusal = self._too_large()
            elif body and not is_json(content_type):
                sent = repr(content_type) if content_type else "none was sent"
                what = f"{scope['method']} {scope['path']}"
                refusal = error_response(415, f"{what}: the body must be JSON, Content-Type: application/json ({sent})")
            receive = _replaying(body, receive)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _origin_refusal(self, scope: Scope, headers: Headers) -> Response | None:
        if self.expected is not None:
            return None
        server = scope.get("server")
        if not self.insecure and server is not None and server[1] is not None and not is_loopback(str(server[0])):
            return error_response(
                403,
                f"this API has no token and the request came in on {server[0]}, not a loopback address: "
                "set COGMAN_API_TOKEN (or api_token=...), serve on 127.0.0.1, or pass insecure=True",
            )
        host = headers.get("host")
        name = host_name(host or "")
        if is_loopback(name) or (self.insecure and is_ip(name)):
            return None
        return error_response(
            421,
            f"Host {host!r} is not a loopback name: without a token the API answers only requests to localhost, "
            "127.0.0.0/8 or [::1] (a page from another name could be rebound to this server). "
            "Set COGMAN_API_TOKEN (or api_token=...) to serve other names",
        )

    def _token_refusal(self, scope: Scope) -> Response | None:
        if self.expected is None:
            return None
        path = _route_path(scope)
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIX):
            return None
        given = _bearer(scope)
        if given is not None and hmac.compare_digest(given, self.expected):
            return None
        return error_response(
            401,
            "missing or wrong API token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def _size_refusal(self, headers: Headers) -> Response | None:
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            return None  # the server refuses a malformed length before the app sees it
        return self._too_large() if length > self.max_body else None

    def _too_large(self) -> Response:
        return error_response(413, f"request body over {self.max_body} bytes")

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The body, or its first ``max_body + 1`` bytes and no more; None if the client disconnected."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body or not message.get("more_body", False):
                return b"".join(chunks)


def _route_path(scope: Scope) -> str:
    path = str(scope["path"])
    root = str(scope.get("root_path", ""))
    return (path[len(root) :] or "/") if root and path.startswith(root) else path


def _bearer(scope: Scope) -> bytes | None:
    """The credentials of ``Authorization: Bearer <token>``, as the bytes the client sent."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = bytes(value).partition(b" ")
            return credentials if scheme.lower() == b"bearer" else None
    return None


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then waits on the client as before."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
