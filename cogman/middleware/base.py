"""Middleware: hooks around sending and executing tasks, for cross-cutting features (metrics, tracing...).

Subclass :class:`Middleware`, override the hooks you need, and pass instances to ``App(middleware=[...])``.
``before_*`` hooks run in order, ``after_*`` hooks in reverse. A hook that raises is logged and skipped:
a broken metrics exporter must never lose a task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cogman.backends.base import Backend
    from cogman.brokers.base import Broker
    from cogman.config import Config
    from cogman.message import Message
    from cogman.priority import Priority

log = logging.getLogger("cogman.middleware")


class AppView(Protocol):
    """The app as middleware sees it (``cogman.App``)."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> Config: ...
    @property
    def backend(self) -> Backend: ...
    @property
    def broker(self) -> Broker: ...
    @property
    def middleware(self) -> MiddlewareStack: ...
    @property
    def tasks(self) -> Mapping[str, object]: ...


class WorkerView(Protocol):
    """A worker as its hooks see it (``cogman.worker.worker.Worker``): whose it is, what it consumes, how
    it fared. A protocol, so this package never imports the worker, which calls these hooks."""

    @property
    def app(self) -> AppView: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def priorities(self) -> Sequence[Priority]: ...
    @property
    def outcomes(self) -> Mapping[Any, int]: ...


class Middleware:
    def before_sending(self, sending: Sending) -> None:
        """A send begins (before its messages' ``before_send``): one ``send``/``send_many`` call, a retry
        attempt, a workflow step, a periodic tick, or a whole workflow's send, inside which its own sends
        nest (``sending.workflow`` names it: ``chain``, ``group``, ``chord``)."""

    def after_sending(self, sending: Sending) -> None:
        """The send ended (after its messages' ``after_send``), or failed with ``sending.exception``: then
        nothing was sent, or what was recorded waits for the re-enqueue sweep."""

    def before_send(self, message: Message) -> None:
        """A task is about to be recorded and published (also each retry attempt)."""

    def after_send(self, message: Message) -> None:
        """The task is recorded and the broker confirmed it (or it waits in the offline outbox)."""

    def before_execute(self, message: Message) -> None:
        """A worker is about to run the handler."""

    def after_execute(self, message: Message, *, result: Any = None, exception: BaseException | None = None) -> None:
        """The handler returned ``result`` or raised ``exception``; the outcome is recorded."""

    def after_outcome(self, message: Message | None, outcome: str) -> None:
        """A delivery is settled: ``outcome`` is one of ``succeeded failed retried dead_lettered skipped requeued``,
        or ``expired`` / ``delayed`` (docs/scheduling.md); ``message`` is None when it could not be decoded."""

    def worker_boot(self, worker: WorkerView) -> None:
        """A worker is starting its threads."""

    def worker_shutdown(self, worker: WorkerView) -> None:
        """A worker has stopped."""


class Sending:
    """One send, as ``before_sending`` / ``after_sending`` see it: ``with stack.sending(name, messages):``.
    A failure the code inside handles (a publish left to re-enqueue) is told with :meth:`failed`."""

    __slots__ = ("exception", "messages", "name", "stack", "workflow")

    def __init__(
        self, stack: MiddlewareStack, name: str, messages: Sequence[Message] = (), workflow: str | None = None
    ) -> None:
        self.stack = stack
        #: The task's name (for a workflow: its first task's).
        self.name = name
        #: What this send publishes; empty for a workflow's send (its nested sends publish).
        self.messages = messages
        self.workflow = workflow
        self.exception: BaseException | None = None

    def failed(self, exception: BaseException) -> None:
        self.exception = exception

    def __enter__(self) -> Sending:
        self.stack.before("before_sending", self)
        return self

    def __exit__(self, kind: object, exception: BaseException | None, traceback: object) -> None:
        if exception is not None and self.exception is None:
            self.exception = exception
        self.stack.after("after_sending", self)


class _Middlewares(list):  # type: ignore[type-arg]
    """The stack's list: any change to it drops the stack's table of hooks (see ``MiddlewareStack``)."""

    def __init__(self, items: Sequence[Middleware], changed: Callable[[], None]) -> None:
        super().__init__(items)
        self._changed = changed


def _dropping(name: str) -> Callable[..., Any]:
    change = getattr(list, name)

    def method(self: _Middlewares, *args: Any, **kwargs: Any) -> Any:
        result = change(self, *args, **kwargs)
        self._changed()
        return result

    method.__name__ = name
    return method


for _name in ("append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse",
              "__setitem__", "__delitem__", "__iadd__"):  # fmt: skip
    setattr(_Middlewares, _name, _dropping(_name))


class MiddlewareStack:
    """Calls one hook on every middleware, isolating their failures.

    A hook is called only on the middleware that define it (the base class's are no-ops), from a table
    built on first use and dropped whenever ``middleware`` changes: a send and an attempt call about ten
    hooks, most of them defined by nobody, and a loop over every middleware with ``getattr`` for each was
    a few per cent of a task's CPU (docs/performance.md)."""

    def __init__(self, middleware: Sequence[Middleware] = ()) -> None:
        self._hooks: dict[str, tuple[Callable[..., Any], ...]] = {}
        self._middleware = _Middlewares(list(middleware), self._hooks.clear)

    @property
    def middleware(self) -> list[Middleware]:
        return self._middleware

    @middleware.setter
    def middleware(self, middleware: Sequence[Middleware]) -> None:
        self._hooks.clear()
        self._middleware = _Middlewares(list(middleware), self._hooks.clear)

    def sending(self, name: str, messages: Sequence[Message] = (), workflow: str | None = None) -> Sending:
        """``with stack.sending(...):`` around one send: its ``before_sending`` and ``after_sending``."""
        return Sending(self, name, messages, workflow)

    def before(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for method in self._defined(hook):
            self._call(method, hook, args, kwargs)

    def after(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for method in reversed(self._defined(hook)):
            self._call(method, hook, args, kwargs)

    def _defined(self, hook: str) -> tuple[Callable[..., Any], ...]:
        """The middleware's own ``hook`` methods, in order (from the table, built here when missing)."""
        known = self._hooks.get(hook)
        if known is not None:
            return known
        noop = getattr(Middleware, hook, None)
        methods = []
        for middleware in self._middleware:
            method = getattr(middleware, hook, None)
            if method is not None and getattr(method, "__func__", None) is not noop:
                methods.append(method)
        found = self._hooks[hook] = tuple(methods)
        return found

    @staticmethod
    def _call(method: Callable[..., Any], hook: str, args: Any, kwargs: Any) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            owner = getattr(method, "__self__", method)
            log.exception("middleware %s failed in %s; carrying on", type(owner).__name__, hook)
