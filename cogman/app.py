"""App: the registry of tasks, the configuration, and the entry points for clients and workers."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from cogman.backends import Backend, create_backend
from cogman.brokers import Broker, create_broker
from cogman.client import Client, new_record
from cogman.config import Config
from cogman.errors import MessageTooLarge
from cogman.message import Message, check_json_arguments
from cogman.middleware import Middleware, MiddlewareStack
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.result import AsyncResult
from cogman.task import Task, default_task_name

if TYPE_CHECKING:
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
        self.config = (config or Config()).with_options(**options)
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.middleware = MiddlewareStack(list(middleware))
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._close_at_exit: Callable[[], None] | None = None

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
    ) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(priority="low", retry=3)``."""
        parsed_priority = Priority.parse(priority)

        def register(function: Callable[..., Any]) -> Task[Any, Any]:
            task_name = name or default_task_name(function)
            if task_name in self.tasks:
                raise ValueError(f"a task named {task_name!r} is already registered with app {self.name!r}")
            task: Task[Any, Any] = Task(
                self, function, name=task_name, priority=parsed_priority, retry=retry, bind=bind
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

    def close(self) -> None:
        """Drain the broker's outbox (up to ``close_timeout``) and release the connections. Runs by itself
        at interpreter exit for an app that is still open; closing twice does nothing."""
        with self._lock:
            client, self._client = self._client, None
            close_at_exit, self._close_at_exit = self._close_at_exit, None
        if close_at_exit is not None:
            atexit.unregister(close_at_exit)
        if client is not None:
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
    ) -> AsyncResult[Any]:
        """Queue a task by name; works from a process that does not have the function."""
        return self.send_many(
            name, [(tuple(args), kwargs or {})], priority=priority, retry=retry, primary_key=primary_key
        )[0]

    def send_many(
        self,
        name: str,
        calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        priority: Priority | str | None = None,
        retry: int | None = None,
        primary_key: str | None = None,
    ) -> list[AsyncResult[Any]]:
        """Queue one task per ``(args, kwargs)``; one backend write and pipelined confirms for all."""
        task = self.tasks.get(name)
        chosen_priority = Priority.parse(priority if priority is not None else task.priority if task else Priority.HIGH)
        budget = retry if retry is not None else task.retry if task else 0
        if not isinstance(budget, int) or budget < 0:
            raise ValueError(f"retry must be a non-negative integer, got {budget!r}")
        records = []
        for args, kwargs in calls:
            check_json_arguments(name, args, kwargs)
            if task is not None:
                try:
                    task.check_arguments(args, kwargs)
                except Exception as exc:
                    raise TypeError(str(exc)) from None
            record = new_record(name, args, kwargs, priority=chosen_priority, retry=budget, primary_key=primary_key)
            self._check_size(record)
            records.append(record)
        self.client.send(records)
        return [AsyncResult(self.backend, record.task_id) for record in records]

    def _check_size(self, record: TaskRecord) -> None:
        size = len(Message.for_record(record, retries_left=record.retry).encode())
        if size > self.config.max_message_size:
            raise MessageTooLarge(
                f"task {record.name}: its message is {size} bytes encoded, over max_message_size="
                f"{self.config.max_message_size} bytes; nothing was recorded or sent"
            )

    def result(self, task_id: str) -> AsyncResult[Any]:
        return AsyncResult(self.backend, task_id)

    # Workers

    def worker(self, concurrency: int | None = None, priorities: Iterable[Priority | str] | None = None) -> Worker:
        """A worker for this app; ``.start()`` blocks until ``.stop()`` or SIGINT/SIGTERM."""
        from cogman.worker import Worker

        return Worker(self, concurrency=concurrency, priorities=priorities)

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
