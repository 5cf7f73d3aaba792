"""App: the registry of tasks, the configuration, and the entry points for clients and workers."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from cogman import inprocess
from cogman.backends import Backend, create_backend
from cogman.backoff import Backoff
from cogman.brokers import Broker, create_broker
from cogman.client import Client, new_record
from cogman.config import Config
from cogman.delays import plan
from cogman.errors import MessageTooLarge
from cogman.message import Message, check_json_arguments
from cogman.middleware import Middleware, MiddlewareStack
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.result import AsyncResult
from cogman.task import Task, default_task_name

if TYPE_CHECKING:
    from cogman.eager import EagerRunner
    from cogman.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")


class App:
    """``App("name", broker=..., backend=..., **config_options)``.

    ``broker`` and ``backend`` default to ``$COGMAN_BROKER_URL`` / ``$COGMAN_BACKEND_URL``, else
    ``memory://``. Connections open on first use, so defining an app at import time costs nothing.
    """

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
        self.middleware = MiddlewareStack(list(middleware))
        self._client: Client | None = None
        self._lock = threading.Lock()
        #: Workers running in this process (``start_background`` or a blocking ``worker().start()``).
        self.running_workers: set[Worker] = set()
        #: Ids sent on the memory:// broker and not yet seen finished, for ``join``.
        self.unjoined: list[str] = []
        self._eager: EagerRunner | None = None
        self._close_at_exit: Callable[[], None] | None = None
        self._install_worker_middleware()

    def __repr__(self) -> str:
        return f"<App {self.name} broker={self.config.broker_url} backend={self.config.backend_url}>"

    # Registration

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        /,
        *,
        name: str | None = None,
        priority: Priority | str = Priority.HIGH,
        retry: int = 0,
        bind: bool = False,
        retry_backoff: Backoff | None = None,
        retry_for: tuple[type[BaseException], ...] | None = None,
        time_limit: float | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        priority: Priority | str = Priority.HIGH,
        retry: int = 0,
        bind: bool = False,
        retry_backoff: Backoff | None = None,
        retry_for: tuple[type[BaseException], ...] | None = None,
        time_limit: float | None = None,
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(priority="low", retry=3)``.

        ``retry_backoff`` (seconds, or a tenacity wait strategy) delays each retry, ``retry_for`` (a
        tuple of exception classes) retries only those, ``time_limit`` (seconds) fails an attempt that
        runs longer: see docs/scheduling.md."""
        parsed_priority = Priority.parse(priority)

        def register(function: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or default_task_name(function)
            if task_name in self.tasks:
                raise ValueError(f"a task named {task_name!r} is already registered with app {self.name!r}")
            task: Task[Any, Any] = Task(
                self,
                function,
                name=task_name,
                priority=parsed_priority,
                retry=retry,
                bind=bind,
                retry_backoff=retry_backoff,
                retry_for=retry_for,
                time_limit=time_limit,
            )
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

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
    ) -> AsyncResult[Any]:
        """Queue a task by name; works from a process that does not have the function. ``task_id``
        chooses the id (sending an id twice records it once; the second message is a duplicate the
        worker skips once the first finished). ``countdown`` (seconds) or ``eta`` (a datetime, naive
        = UTC) delays it; ``expires`` (seconds from now, or a datetime) fails it unrun if not started
        by then (docs/scheduling.md)."""
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
        )[0]

    def send_many(
        self,
        name: str,
        calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        priority: Priority | str | None = None,
        retry: int | None = None,
        primary_key: str | None = None,
        task_ids: Sequence[str] | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
    ) -> list[AsyncResult[Any]]:
        """Queue one task per ``(args, kwargs)``; one backend write and pipelined confirms for all. The
        options, ``countdown``/``eta``/``expires`` included, are the same for every call."""
        schedule = plan(countdown=countdown, eta=eta, expires=expires)
        task = self.tasks.get(name)
        chosen_priority = Priority.parse(priority if priority is not None else task.priority if task else Priority.HIGH)
        budget = retry if retry is not None else task.retry if task else 0
        if not isinstance(budget, int) or budget < 0:
            raise ValueError(f"retry must be a non-negative integer, got {budget!r}")
        if task_ids is not None and len(task_ids) != len(calls):
            raise ValueError(f"task_ids gives {len(task_ids)} ids for {len(calls)} calls")
        records = []
        for index, (args, kwargs) in enumerate(calls):
            check_json_arguments(name, args, kwargs)
            if task is not None:
                try:
                    task.check_arguments(args, kwargs)
                except Exception as exc:
                    raise TypeError(str(exc)) from None
            chosen_id = task_ids[index] if task_ids is not None else None
            records.append(
                new_record(
                    name,
                    args,
                    kwargs,
                    priority=chosen_priority,
                    retry=budget,
                    primary_key=primary_key,
                    task_id=chosen_id,
                    eta=schedule.eta,
                    expires=schedule.expires,
                )
            )
            self._check_size(records[-1])
        self.client.send(records)
        if self.config.eager:
            self._eager_runner().drain()
        elif self.config.broker_url.startswith("memory://"):
            self.unjoined.extend(record.task_id for record in records)
        return [AsyncResult(self.backend, record.task_id, self) for record in records]

    def _eager_runner(self) -> EagerRunner:
        from cogman.eager import EagerRunner

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

    def _check_size(self, record: TaskRecord) -> None:
        size = len(Message.for_record(record, retries_left=record.retry).encode())
        if size > self.config.max_message_size:
            raise MessageTooLarge(
                f"task {record.name}: its message is {size} bytes encoded, over max_message_size="
                f"{self.config.max_message_size} bytes; nothing was recorded or sent"
            )

    def result(self, task_id: str) -> AsyncResult[Any]:
        return AsyncResult(self.backend, task_id, self)

    # Workers

    def worker(self, concurrency: int | None = None, priorities: Iterable[Priority | str] | None = None) -> Worker:
        """A worker for this app; ``.start()`` blocks until ``.stop()`` or SIGINT/SIGTERM."""
        from cogman.worker import Worker

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

    def _install_worker_middleware(self) -> None:
        """Workers write heartbeats by default (``cogman ping``), and serve metrics when ``metrics_port``
        is set. Both only act once a worker boots, so a sending-only process pays nothing."""
        from cogman.heartbeat import Heartbeat

        if not any(isinstance(m, Heartbeat) for m in self.middleware.middleware):
            self.middleware.middleware.append(Heartbeat())
        if self.config.metrics_port is not None:
            from cogman.metrics import install_prometheus

            install_prometheus(self, self.config.metrics_port)


def _closer(app: weakref.ref[App]) -> Callable[[], None]:
    """What atexit calls for one app: holds it weakly, so an app dropped by its program can still be
    garbage-collected (and is then not closed here)."""

    def close_at_exit() -> None:
        alive = app()
        if alive is not None:
            alive.close()

    return close_at_exit
