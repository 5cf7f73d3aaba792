"""The app of the operator tests (API, dashboard, CLI, metrics, heartbeats): its broker and backend come
from the environment, so a worker process started with ``-A tests.admin_app`` shares them with the test."""

from __future__ import annotations

import os
from typing import Any

from cogman import App

#: The XSS sample of issue 10: a task name, payload and error text that must render as text.
XSS = "<img src=x onerror=alert(1)>"


def register(app: App) -> App:
    @app.task(name="admin.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="admin.fail")
    def fail(reason: str) -> None:
        raise ValueError(reason)

    @app.task(name=XSS)
    def xss(text: str) -> None:
        raise RuntimeError(text)

    return app


def make_app(**options: Any) -> App:
    prefix = os.environ.get("COGMAN_TEST_PREFIX")
    if prefix:
        options.setdefault("redis_prefix", prefix)
    return register(App("admin", **options))


app = make_app()
