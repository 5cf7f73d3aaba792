"""The REST API and the dashboard: ``create_app(app)`` is an ASGI app (FastAPI), ``cogman api`` serves it.

Needs the ``api`` extra: ``pip install cogman[api]``. docs/api.md describes every route.

May import any package but ``cli``: it is a face of the app, like the CLI, over ``admin`` and the backends.
"""

from __future__ import annotations

from cogman.api.app import create_app

__all__ = ["create_app"]
