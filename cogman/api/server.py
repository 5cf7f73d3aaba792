"""``cogman api``: serve ``create_app(app)`` with uvicorn, refusing an open bind without a token before it
starts (``create_app`` refuses the same requests of an app embedded elsewhere, when they come)."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cogman.errors import CogmanError

if TYPE_CHECKING:
    from cogman.app import App


class InsecureBind(CogmanError):
    """Serving the API to the network with no token, without ``--insecure``."""


def check_bind(app: App, host: str, insecure: bool) -> None:
    from cogman.api.auth import is_loopback

    if app.config.api_token or is_loopback(host) or insecure:
        return
    raise InsecureBind(
        f"refusing to serve the API on {host} without a token: anyone who reaches it could read every task "
        "and re-run them. Set COGMAN_API_TOKEN (or api_token=...), bind to 127.0.0.1, or pass --insecure."
    )


def serve(app: App, *, host: str, port: int, insecure: bool = False, cors_origins: Sequence[str] = ()) -> None:
    check_bind(app, host, insecure)
    try:
        import uvicorn

        from cogman.api import create_app
    except ImportError as exc:
        raise CogmanError(f"cogman api needs the api extra ({exc.name} is missing): pip install cogman[api]") from None
    api = create_app(app, cors_origins=list(cors_origins) or None, insecure=insecure)
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again to the handler it found:
    # a no-op one makes a requested stop exit 0, as the worker does.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn.run(api, host=host, port=port, log_level="info", access_log=False)
