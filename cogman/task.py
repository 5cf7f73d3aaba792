"""Task: a registered function, with ``delay``/``send`` to run it on a worker, and TaskContext for ``bind``."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypedDict, TypeVar

from cogman.aio.bridge import AsyncBridge, bridge_for, in_thread
from cogman.backoff import Backoff, RetryPolicy
from cogman.errors import PoisonMessage
from cogman.limits.policy import TaskLimits
from cogman.priority import Priority

if TYPE_CHECKING:
    from cogman.result import AsyncResult
    from cogman.signature import SendingApp, Signature

P = ParamSpec("P")
#: The message formats a task may speak: cogman's JSON envelope, or Go Cogman's raw payload.
WIRES = ("cogman", "go")
R = TypeVar("R")


class TaskOptions(TypedDict, total=False):
    """The options of ``@app.task(...)`` beside ``name``, declared once for ``App.task``, its subclasses'
    and :class:`Task`: ``retry_backoff``/``retry_for`` in cogman/backoff.py, ``time_limit`` in
    cogman/worker/limits.py, ``wire`` in docs/go-interop.md; ``unique_key``/``unique_for``,
    ``rate_limit``/``max_concurrency`` and their keys in docs/control.md."""

    priority: Priority | str
    retry: int
    bind: bool
    retry_backoff: Backoff | None
    retry_for: tuple[type[BaseException], ...] | None
    time_limit: float | None
    wire: str
    unique_key: str | Callable[..., str] | None
    unique_for: float | None
    rate_limit: str | None
    rate_limit_key: Callable[..., Any] | None
    max_concurrency: int | None
    concurrency_key: Callable[..., Any] | None


class CancelFlag(Protocol):
    """What ``TaskContext.cancelled`` reads: set by the worker once the attempt is cancelled."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a ``bind=True`` handler receives as its first argument."""

    task_id: str
    name: str
    original_task_id: str
    attempt: int
    retries_left: int
    primary_key: str | None = None
    #: Set by the worker once this attempt is cancelled (cogman/worker/cancelling.py).
    cancel_event: CancelFlag | None = field(default=None, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled while it runs: a long loop can check it and stop (the worker
        also interrupts the handler; this is for code that catches that, or waits in C between checks)."""
        return self.cancel_event is not None and self.cancel_event.is_set()


class Task(Generic[P, R]):
    """A function registered with an app. Calling it runs it here; ``delay``/``send`` queue it."""

    def __init__(
        self,
        app: SendingApp,
        fn: Callable[..., Any],
        *,
        name: str,
        priority: Priority | str = Priority.HIGH,
        retry: int = 0,
        bind: bool = False,
        retry_backoff: Backoff | None = None,
        retry_for: tuple[type[BaseException], ...] | None = None,
        time_limit: float | None = None,
        wire: str = "cogman",
        unique_key: str | Callable[..., str] | None = None,
        unique_for: float | None = None,
        **limits: Any,
    ) -> None:
        if retry < 0:
            raise ValueError(f"retry for task {name!r} must not be negative, got {retry}")
        #: ``retry_backoff`` and ``retry_for`` (cogman/backoff.py).
        self.retry_policy = RetryPolicy.build(name, retry_backoff, retry_for)
        #: Seconds an attempt may run (cogman/worker/limits.py); None: no limit.
        self.time_limit = check_time_limit(name, time_limit)
        if wire not in WIRES:
            raise ValueError(f"task {name!r}: wire must be 'cogman' or 'go' (Go Cogman's format), got {wire!r}")
        #: ``"go"``: the task speaks Go Cogman's format (docs/go-interop.md): ``delay(payload: bytes)``,
        #: the handler receives the body's bytes, the records are Go's.
        self.wire = wire
        if unique_key is not None and not (callable(unique_key) or (isinstance(unique_key, str) and unique_key)):
            raise TypeError(f"task {name!r}: unique_key must be a non-empty string or a callable, got {unique_key!r}")
        if wire == "go" and (unique_key is not None or unique_for is not None):
            raise ValueError(f"task {name!r}: Go Cogman's format (wire='go') has no unique tasks")
        #: A send's default unique key, or a callable of its arguments giving it (cogman/sending/unique.py).
        self.unique_key = unique_key
        #: Seconds a unique send holds its key at most (None: until its chain is final).
        self.unique_for = check_unique_for(f"task {name!r}", unique_for)
        #: ``rate_limit``, ``rate_limit_key``, ``max_concurrency``, ``concurrency_key`` (docs/control.md).
        self.limits = TaskLimits.build(name, **limits)
        if self.limits is not None and wire != "cogman":
            raise ValueError(f"task {name!r}: rate_limit and max_concurrency need wire='cogman'")
        self.app = app
        self.fn = fn
        self.name = name
        self.priority = Priority.parse(priority)
        self.retry = retry
        self.bind = bind
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature = inspect.signature(fn)
        self._keywords = _keyword_names(self._signature, bound=bind)
        self._positional = _positional_range(self._signature, bound=bind)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} priority={self.priority.value} retry={self.retry}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self.fn(*args, **kwargs)
        return result

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Queue the task with these arguments and the task's default options."""
        return self.send(args=args, kwargs=kwargs)

    def send(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: Priority | str | None = None,
        retry: int | None = None,
        primary_key: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        wait_confirmed: bool | None = None,
        unique_key: str | None = None,
        unique_for: float | None = None,
    ) -> AsyncResult[R]:
        """Queue the task with explicit options. ``countdown`` (seconds) or ``eta`` (a datetime, naive =
        UTC) delays it; ``expires`` (seconds from now, or a datetime) fails it unrun if not started by
        then. Returns once it is recorded and handed to the broker (``send_mode="recorded"``, the
        default) or once the broker confirmed it (``send_mode="confirmed"``, or ``wait_confirmed=True``
        for this send); see docs/guarantees.md. With ``unique_key`` (or the task's), a send while a task
        holding that key is not final sends nothing and returns that task's handle, ``deduplicated``
        (docs/control.md); ``unique_for`` (seconds) bounds how long the key is held."""
        return self.app.send_many(
            self.name,
            [(tuple(args), kwargs or {})],
            wait_confirmed=wait_confirmed,
            priority=priority,
            retry=retry,
            primary_key=primary_key,
            countdown=countdown,
            eta=eta,
            expires=expires,
            unique_key=unique_key,
            unique_for=unique_for,
        )[0]

    async def delay_async(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """``delay`` for asyncio code: the same send, in the app's thread pool (docs/async.md)."""
        return await self.send_async(args=args, kwargs=kwargs)

    send_async = in_thread(send)

    @property
    def aio(self) -> AsyncBridge:
        """The app's thread pool for the ``*_async`` methods."""
        return bridge_for(self.app)

    def apply_async(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        priority: Priority | str | None = None,
        retry: int | None = None,
        primary_key: str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
        unique_key: str | None = None,
        unique_for: float | None = None,
    ) -> AsyncResult[R]:
        """Celery's name for ``send``, with ``task_id`` to choose the id."""
        return self.app.send_task(
            self.name,
            args=args,
            kwargs=kwargs,
            priority=priority,
            retry=retry,
            primary_key=primary_key,
            task_id=task_id,
            countdown=countdown,
            eta=eta,
            expires=expires,
            unique_key=unique_key,
            unique_for=unique_for,
        )

    def send_many(
        self,
        calls: Iterable[tuple[Any, ...]],
        *,
        priority: Priority | str | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        expires: float | datetime | None = None,
    ) -> list[AsyncResult[R]]:
        """Queue one task per tuple of positional arguments; the confirms are awaited together."""
        return self.app.send_many(
            self.name,
            [(tuple(args), {}) for args in calls],
            priority=priority,
            countdown=countdown,
            eta=eta,
            expires=expires,
        )

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """This task with these arguments, as data: a step of ``chain``, ``group`` or ``chord``
        (a chain step receives the previous result in front of them)."""
        from cogman.signature import Signature

        return Signature(self.name, args, kwargs, app=self.app)

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise PoisonMessage if the arguments do not fit the handler's signature. A keyword the
        handler does not take is named first: ``Signature.bind`` may report a missing argument instead,
        which sends the user looking in the wrong place."""
        if not kwargs and self._positional is not None:
            fewest, most = self._positional
            if fewest <= len(args) <= most:
                return  # what bind would accept, without its per-call cost (it runs on every send)
        if self._keywords is not None:
            unexpected = [name for name in kwargs if name not in self._keywords]
            if unexpected:
                listed = ", ".join(repr(name) for name in unexpected)
                plural = "s" if len(unexpected) > 1 else ""
                raise PoisonMessage(
                    f"arguments do not fit {self.name}: got an unexpected keyword argument{plural} {listed}"
                )
        try:
            if self.bind:
                self._signature.bind(None, *args, **kwargs)
            else:
                self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise PoisonMessage(f"arguments do not fit {self.name}: {exc}") from None


def _positional_range(signature: inspect.Signature, *, bound: bool) -> tuple[int, float] | None:
    """(fewest, most) positional arguments a call without keywords may pass; None when such a call can
    never bind (a keyword-only parameter without a default). A bound handler's TaskContext is not
    counted."""
    parameters = list(signature.parameters.values())
    if bound:
        if not parameters or parameters[0].kind not in (
            parameters[0].POSITIONAL_ONLY,
            parameters[0].POSITIONAL_OR_KEYWORD,
        ):
            return None  # the TaskContext has nowhere plain to go: bind decides
        parameters = parameters[1:]
    if any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in parameters):
        return None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    fewest = sum(1 for p in positional if p.default is p.empty)
    most = math.inf if any(p.kind is p.VAR_POSITIONAL for p in parameters) else len(positional)
    return fewest, most


def _keyword_names(signature: inspect.Signature, *, bound: bool) -> frozenset[str] | None:
    """The names a handler takes by keyword; None when it takes any (``**kwargs``). A bound handler's
    first parameter is the TaskContext, never a caller's keyword."""
    parameters = list(signature.parameters.values())[1 if bound else 0 :]
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def default_task_name(fn: Callable[..., Any]) -> str:
    """``module.qualname``; a script run directly is named after its file, not ``__main__``, so the
    worker that imports it by module name finds the same task."""
    module = fn.__module__
    if module == "__main__":
        main = inspect.getmodule(fn)
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        else:
            path = getattr(main, "__file__", None) or "__main__"
            module = path.rsplit("/", 1)[-1].removesuffix(".py")
    return f"{module}.{fn.__qualname__}"


def check_time_limit(task_name: str, value: Any) -> float | None:
    """A task's ``time_limit``: None, or seconds > 0. Raises TypeError/ValueError naming the task."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"task {task_name!r}: time_limit must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"task {task_name!r}: time_limit must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_unique_for(where: str, value: Any) -> float | None:
    """None, or seconds > 0; TypeError/ValueError naming ``where``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}: unique_for must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: unique_for must be a finite number of seconds > 0, got {value!r}")
    return float(value)
