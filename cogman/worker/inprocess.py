"""Running tasks inside the sending process: what ``join`` waits for, and why ``get()`` may never finish.

The embedded ``memory://`` broker and backend live in one process. A test sends, starts a worker in the
same process (``app.start_background()`` or the ``cogman_worker`` fixture) and joins; a program that
sends on ``memory://`` with no worker of its own would wait forever, so ``get()`` raises instead.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, Protocol

from cogman.errors import CogmanError, TaskFailed
from cogman.result import AsyncResult
from cogman.status import Status

if TYPE_CHECKING:
    from collections.abc import Collection

    from cogman.backends.base import Backend
    from cogman.config import Config

log = logging.getLogger("cogman.inprocess")

#: ``unjoined`` is pruned of finished ids when it reaches this length (and then twice what remained).
PRUNE_FROM = 10_000
#: Failed ids a pruning keeps, the earliest sent, so ``join(fail_fast=True)`` still raises them.
FAILURES_KEPT = 1_000


class InProcessHost(Protocol):
    """The app as ``join`` and the ``NoWorker`` trap read it (``cogman.App``)."""

    @property
    def config(self) -> Config: ...
    @property
    def backend(self) -> Backend: ...
    @property
    def running_workers(self) -> Collection[object]: ...
    @property
    def unjoined(self) -> Unjoined: ...
    def why_no_worker(self) -> str | None: ...


class Unjoined:
    """Ids sent on the memory:// broker and not yet joined, in send order (``app.unjoined``).

    A process that never calls ``join`` (a server on memory://) would keep every id: so once it holds
    ``PRUNE_FROM``, the ids whose chain finished are dropped, except the first ``FAILURES_KEPT``
    failures. Each pruning reads every id once and doubles the next threshold: O(1) per send."""

    def __init__(self, app: InProcessHost) -> None:
        self._app = weakref.ref(app)  # the app holds this; no cycle to keep it alive
        self._ids: list[str] = []
        self._lock = threading.Lock()
        self._prune_at = PRUNE_FROM
        self._pruning = False

    def __len__(self) -> int:
        return len(self._ids)

    def __bool__(self) -> bool:
        return bool(self._ids)

    def append(self, task_id: str) -> None:
        self.extend([task_id])

    def extend(self, task_ids: Iterable[str]) -> None:
        with self._lock:
            self._ids.extend(task_ids)
            due = len(self._ids) >= self._prune_at and not self._pruning
            self._pruning |= due
        if not due:
            return
        try:
            self._prune()
        except Exception as exc:  # the tasks were sent: a failed clean-up must not fail their send
            log.warning("could not drop finished tasks from app.unjoined (%s); trying again later", exc)
        finally:
            with self._lock:
                self._pruning = False
                self._prune_at = max(PRUNE_FROM, 2 * len(self._ids))

    def first(self) -> str | None:
        with self._lock:
            return self._ids[0] if self._ids else None

    def discard_first(self, task_id: str) -> None:
        """Drop ``task_id`` from the front, if it is still there (a pruning may have taken it)."""
        with self._lock:
            if self._ids and self._ids[0] == task_id:
                del self._ids[0]

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()
            self._prune_at = PRUNE_FROM

    def _prune(self) -> None:
        app = self._app()
        if app is None:
            return
        with self._lock:
            ids = list(self._ids)
        kept_failures = 0
        drop = set()
        for task_id in ids:  # no lock held while reading the backend
            state = _state(app, task_id)
            if state == "failed" and kept_failures < FAILURES_KEPT:
                kept_failures += 1
            elif state != "running":
                drop.add(task_id)
        with self._lock:
            self._ids = [task_id for task_id in self._ids if task_id not in drop]


def _state(app: InProcessHost, task_id: str) -> Literal["running", "failed", "done"]:
    """Where ``task_id``'s chain stands for ``join``: ``failed`` once its last allowed attempt failed
    (a retry to come is still running), ``done`` once it succeeded or has no record (forgotten or
    expired: nothing to wait for)."""
    backend = app.backend
    record = backend.get(task_id)
    if record is None:
        return "done"
    original = record if record.is_original else backend.get(record.original_task_id) or record
    latest = backend.get(original.latest_attempt_id) if original.latest_attempt_id else original
    if latest is None or not latest.status.is_final:
        return "running"
    fresh = backend.get(original.task_id) or original  # a retry may have been spawned meanwhile, as get() knows
    if (fresh.latest_attempt_id or fresh.task_id) != latest.task_id:
        return "running"
    return "done" if latest.status is Status.SUCCESS else "failed"


def join(app: InProcessHost, timeout: float | None = None, *, fail_fast: bool = False) -> None:
    """Wait until every task sent so far on the memory:// broker has finished (retries included),
    for tests, as Dramatiq's ``StubBroker.join``; with ``fail_fast``, raise the first failure met
    (TaskFailed), in send order. Raises TimeoutError, or NoWorker when no worker runs here."""
    if not app.config.broker_url.startswith("memory://") or app.config.eager:
        if app.config.eager:
            return  # every send already ran to completion
        raise CogmanError("join() waits for tasks sent on the memory:// broker; use AsyncResult.get() elsewhere")
    deadline = None if timeout is None else time.monotonic() + timeout
    while (task_id := app.unjoined.first()) is not None:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            AsyncResult(app.backend, task_id, app).get(timeout=remaining)
        except TaskFailed:
            if fail_fast:
                app.unjoined.discard_first(task_id)
                raise
        app.unjoined.discard_first(task_id)


def why_no_worker(app: InProcessHost) -> str | None:
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
