"""App: the registry of tasks, the configuration, and the entry points for clients and workers."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, Unpack, overload

from cogman.aio.bridge import AsyncBridge, in_thread
from cogman.backends import Backend, create_backend
from cogman.brokers import Broker, create_broker
from cogman.config.settings import Config
from cogman.middleware.base import Middleware, MiddlewareStack
from cogman.middleware.defaults import install_defaults
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.result import AsyncResult, cancel_task
from cogman.sending.client import Client
from cogman.sending.go_send import send_go
from cogman.sending.prepare import SendOptions, prepare
from cogman.sending.unique import send_records
from cogman.task import Task, TaskOptions, default_task_name
from cogman.worker import inprocess

if TYPE_CHECKING:
    from datetime import timedelta, tzinfo

    from cogman.scheduling.periodic import Schedule
    from cogman.worker.eager import EagerRunner
    from cogman.worker.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")


class App:
    """``App("name", broker=..., backend=..., **config_options)``.

    ``broker`` and ``backend`` default to ``$COGMAN_BROKER_URL`` / ``$COGMAN_BACKEND_URL``, else
    ``memory://``. Connections open on first use, so defining an app at import time costs nothing.
    """

    #: What ``task()`` registers: a subclass adds methods (cogman.contrib.django's ``delay_on_commit``).
    task_class: type[Task[Any, Any]] = Task

    def __init__(
        self,
        name: str = "cogman",
        broker: str | None = None,
        backend: str | Sequence[str] | None = None,
        *,
        config: Config | None = None,
        middleware: Iterable[Middleware] = (),
        **options: Any,
    ) -> None:
        if broker is not None:
            options["broker_url"] = broker
        if backend is not None:
            options["backend_url"] = backend if isinstance(backend, str) else list(backend)
        self.name = name
        self.config = config.with_options(**options) if config is not None else Config.from_env(**options)
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: Periodic schedules by name (``periodic``, ``add_periodic``), run by ``cogman beat``.
        self.schedules: dict[str, Schedule] = {}
        self.middleware = MiddlewareStack(list(middleware))
        self._client: Client | None = None
        #: The thread pool of the ``*_async`` methods (cogman/aio/), started on first use.
        self.aio = AsyncBridge()
        self._lock = threading.Lock()
        #: Workers running in this process (``start_background`` or a blocking ``worker().start()``).
        self.running_workers: set[Worker] = set()
        #: Ids sent on the memory:// broker and not yet seen finished, for ``join``.
        self.unjoined = inprocess.Unjoined(self)
        self._eager: EagerRunner | None = None
        self._close_at_exit: Callable[[], None] | None = None
        install_defaults(self)

    def __repr__(self) -> str:
        return f"<App {self.name} broker={self.config.broker_url} backend={self.config.backend_url}>"

    # Registration

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self, /, *, name: str | None = None, **options: Unpack[TaskOptions]
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Unpack[TaskOptions]
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(priority="low", retry=3)``.

        ``retry_backoff`` (seconds, or a tenacity wait strategy) delays each retry, ``retry_for`` (a
        tuple of exception classes) retries only those, ``time_limit`` (seconds) fails an attempt that
        runs longer: see docs/scheduling.md. ``wire="go"`` speaks Go Cogman's format (docs/go-interop.md).
        ``unique_key`` (a string, or a callable of the arguments) and ``unique_for``, ``rate_limit="100/m"``,
        ``max_concurrency`` and their ``*_key``s: docs/control.md."""
        Priority.parse(options.get("priority", Priority.HIGH))  # a bad one fails here, not at first use

        def register(function: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or default_task_name(function)
            if task_name in self.tasks:
                raise ValueError(f"a task named {task_name!r} is already registered with app {self.name!r}")
            task: Task[Any, Any] = self.task_class(self, function, name=task_name, **options)
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def periodic(self, cron: str | None = None, **options: Any) -> Callable[[Any], Task[Any, Any]]:
        """``@app.periodic("*/5 * * * *")`` (cron, ``tz="Europe/Paris"``; UTC by default) or
        ``@app.periodic(every=timedelta(minutes=5))`` over a function (registered as a task too) or a
        task; ``args``, ``kwargs``, ``name`` and ``catch_up`` as for ``add_periodic``."""
        from cogman.scheduling.periodic import periodic

        return periodic(self.task, self.tasks, self.schedules, cron, **options)

    def add_periodic(
        self,
        task: Task[Any, Any] | str,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        tz: str | tzinfo | None = None,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        catch_up: int | None = None,
    ) -> Schedule:
        """Send ``task`` at every tick of ``cron`` (in ``tz``) or ``every``; ``name`` (default: the task's
        name) identifies the schedule's ticks; ``catch_up`` overrides ``Config.periodic_catch_up``."""
        from cogman.scheduling.periodic import add_schedule

        return add_schedule(
            self.tasks,
            self.schedules,
            task,
            cron=cron,
            every=every,
            tz=tz,
            args=args,
            kwargs=kwargs,
            name=name,
            catch_up=catch_up,
        )

    # Connections

    @property
    def client(self) -> Client:
        """Opens the broker and backend on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    backend = create_backend(self.config)
                    self._client = Client(create_broker(self.config), backend, self.middleware, self.config)
                    self._close_at_exit = _closer(weakref.ref(self))
                    atexit.register(self._close_at_exit)
        return self._client

    @property
    def broker(self) -> Broker:
        return self.client.broker

    @property
    def backend(self) -> Backend:
        return self.client.backend

    def reconfigure(self, config: Config | None = None, **options: Any) -> None:
        """Close the connections and use another configuration (for tests: the ``cogman_app`` fixture
        switches an app to memory:// and back). Tasks stay registered."""
        self.close()
        self.config = config.with_options(**options) if config is not None else self.config.with_options(**options)
        self.unjoined.clear()

    def close(self) -> None:
        """Drain the broker's outbox (up to ``close_timeout``) and release the connections. Runs by itself
        at interpreter exit for an app that is still open; closing twice does nothing."""
        with self._lock:
            client, self._client = self._client, None
            eager, self._eager = self._eager, None
            close_at_exit, self._close_at_exit = self._close_at_exit, None
        if close_at_exit is not None:
            atexit.unregister(close_at_exit)
        self.aio.shutdown()
        if eager is not None:
            eager.close()
        if client is not None:
            client.close()
            client.broker.close()
            client.backend.close()

    # Sending

    def send_task(
        self,
        name: str,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: Priority | str | None = None,
        retry: int | None = None,
        primary_key: str | None = None,
        task_id: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        wait_confirmed: bool | None = None,
        unique_key: str | None = None,
        unique_for: float | None = None,
    ) -> AsyncResult[Any]:
        """Queue a task by name; works from a process that does not have the function. ``task_id``
        chooses the id (sending an id twice records it once; the second message is a duplicate the
        worker skips once the first finished). ``countdown`` (seconds) or ``eta`` (a datetime, naive
        = UTC) delays it; ``expires`` (seconds from now, or a datetime) fails it unrun if not started
        by then (docs/scheduling.md). ``wait_confirmed`` overrides ``send_mode``. ``unique_key`` and
        ``unique_for``: as ``Task.send`` (docs/control.md)."""
        return self.send_many(
            name,
            [(tuple(args), kwargs or {})],
            priority=priority,
            retry=retry,
            primary_key=primary_key,
            task_ids=None if task_id is None else [task_id],
            countdown=countdown,
            eta=eta,
            expires=expires,
            wait_confirmed=wait_confirmed,
            unique_key=unique_key,
            unique_for=unique_for,
        )[0]

    send_task_async = in_thread(send_task)

    async def aclose(self) -> None:
        """``close`` for asyncio code: waits for the async sends in flight, closes in a thread."""
        await self.aio.aclose(then=self.close)

    def send_many(
        self,
        name: str,
        calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        wait_confirmed: bool | None = None,
        **options: Any,
    ) -> list[AsyncResult[Any]]:
        """Queue one task per ``(args, kwargs)``; pipelined backend writes and confirms for all. The
        options (``priority``, ``retry``, ``primary_key``, ``countdown``, ``eta``, ``expires``; see
        ``send_task``) are the same for every call; ``task_ids`` and ``extras`` give one per call."""
        task = self.tasks.get(name)
        if task is not None and task.wire == "go":  # Go Cogman's format (docs/go-interop.md)
            ids, receipt = send_go(self.client, self.config, task, calls, wait_confirmed, **options)
        else:
            records, messages = prepare(self.config, self.tasks, name, calls, SendOptions(**options))
            ids, receipt = send_records(self.client, records, messages, wait_confirmed)
        if self.config.eager:
            self._eager_runner().drain()
        elif self.config.broker_url.startswith("memory://"):
            self.unjoined.extend(ids)
        return [AsyncResult(self.backend, task_id, self, receipt) for task_id in ids]

    def new_records(
        self, name: str, calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], **options: Any
    ) -> list[TaskRecord]:
        """The records ``send_many`` would send with these options, checked; nothing is recorded or
        sent. Workers build the next step of a workflow, and beats a tick, with it."""
        return prepare(self.config, self.tasks, name, calls, SendOptions(**options))[0]

    def _eager_runner(self) -> EagerRunner:
        from cogman.worker.eager import EagerRunner

        if self._eager is None:
            with self._lock:
                if self._eager is None:
                    self._eager = EagerRunner(self)
        return self._eager

    def join(self, timeout: float | None = None, *, fail_fast: bool = False) -> None:
        """Wait until every task sent so far on the memory:// broker has finished (retries included),
        for tests, as Dramatiq's ``StubBroker.join``; with ``fail_fast``, raise the first failure met
        (TaskFailed), in send order. Raises TimeoutError, or NoWorker when no worker runs here."""
        inprocess.join(self, timeout, fail_fast=fail_fast)

    def result(self, task_id: str) -> AsyncResult[Any]:
        return AsyncResult(self.backend, task_id, self)

    cancel = cancel_task  # issue 23: cogman/admin/cancel.py, docs/control.md
    # Workers

    def worker(self, concurrency: int | None = None, priorities: Iterable[Priority | str] | None = None) -> Worker:
        """A worker for this app; ``.start()`` blocks until ``.stop()`` or SIGINT/SIGTERM."""
        from cogman.worker.worker import Worker

        return Worker(self, concurrency=concurrency, priorities=priorities)

    def why_no_worker(self) -> str | None:
        """Why a task sent here cannot finish (memory:// with no worker in this process), or None."""
        return inprocess.why_no_worker(self)

    def start_background(
        self, concurrency: int | None = None, priorities: Iterable[Priority | str] | None = None
    ) -> Worker:
        """A worker running in threads of this process; returns once it consumes. ``.stop()`` ends it."""
        worker = self.worker(concurrency=concurrency, priorities=priorities)
        worker.start(block=False)
        return worker


def _closer(app: weakref.ref[App]) -> Callable[[], None]:
    """What atexit calls for one app: holds it weakly, so an app dropped by its program can still be
    garbage-collected (and is then not closed here)."""

    def close_at_exit() -> None:
        alive = app()
        if alive is not None:
            alive.close()

    return close_at_exit
