"""Bearer-token auth: when ``Config.api_token`` is set, every data route asks for
``Authorization: Bearer <token>``, compared in constant time (``hmac.compare_digest``). The check that
answers first is guard.py's, before the body is read; this dependency names the scheme in the OpenAPI
schema and checks again."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cogman.api.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="The API token (Config.api_token / COGMAN_API_TOKEN).")


def token_guard(token: str | None) -> Callable[..., None]:
    """A FastAPI dependency that lets a request through when ``token`` is None or the request carries it."""
    expected = token.encode() if token else None

    def guard(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:  # noqa: B008
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if credentials is None or not hmac.compare_digest(given, expected):
            raise Unauthorized()

    return guard


class Unauthorized(ApiError):
    def __init__(self) -> None:
        super().__init__(
            401,
            "missing or wrong API token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def is_loopback(host: str) -> bool:
    """True for the addresses only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback  # ::ffff:127.0.0.1: a dual-stack socket's view of 127.0.0.1
