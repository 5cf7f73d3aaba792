"""Running tasks inside the sending process: what ``join`` waits for, and why ``get()`` may never finish.

The embedded ``memory://`` broker and backend live in one process. A test sends, starts a worker in the
same process (``app.start_background()`` or the ``cogman_worker`` fixture) and joins; a program that
sends on ``memory://`` with no worker of its own would wait forever, so ``get()`` raises instead.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cogman.errors import CogmanError, TaskFailed
from cogman.result import AsyncResult

if TYPE_CHECKING:
    from cogman.app import App


def join(app: App, timeout: float | None = None, *, fail_fast: bool = False) -> None:
    """Wait until every task sent so far on the memory:// broker has finished (retries included),
    for tests, as Dramatiq's ``StubBroker.join``; with ``fail_fast``, raise the first failure met
    (TaskFailed), in send order. Raises TimeoutError, or NoWorker when no worker runs here."""
    if not app.config.broker_url.startswith("memory://") or app.config.eager:
        if app.config.eager:
            return  # every send already ran to completion
        raise CogmanError("join() waits for tasks sent on the memory:// broker; use AsyncResult.get() elsewhere")
    deadline = None if timeout is None else time.monotonic() + timeout
    while app.unjoined:
        task_id = app.unjoined[0]
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            AsyncResult(app.backend, task_id, app).get(timeout=remaining)
        except TaskFailed:
            if fail_fast:
                app.unjoined.pop(0)
                raise
        app.unjoined.pop(0)


def why_no_worker(app: App) -> str | None:
    """Why a task of this process cannot finish, when its transport is in-process memory and no
    worker of this process runs (``get()`` raises instead of waiting forever); None when it can."""
    if app.running_workers or app.config.eager:
        return None
    broker, backends = app.config.broker_url, app.config.backend_urls
    if broker.startswith("memory://"):
        return (
            "the memory:// broker keeps tasks inside the process that sent them, and no worker runs in this "
            "process. Start one with app.start_background(), or share a broker between processes: "
            "COGMAN_BROKER_URL=amqp://... with COGMAN_BACKEND_URL=redis://..."
        )
    if backends[0].startswith("memory://"):
        return (
            "the memory:// backend is per process: a worker in another process records the result in its "
            "own memory. Use a shared backend: COGMAN_BACKEND_URL=redis://... (or mongodb://...)"
        )
    return None
