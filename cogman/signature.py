"""Signature: one task call as data (task name, arguments, send options), the brick of chain, group, chord.

A signature travels inside the messages of a workflow (the steps after a chain's current one, a chord's
callback), so it is JSON and nothing else: ``to_dict`` / ``from_dict``. Arguments are checked where they
are built, against the handler when the task is registered in the app: JSON-serialisable, and not more
or other arguments than the handler takes (a step of a chain gets the previous result in front of its
own arguments, so the full fit is checked when the workflow is sent, by :meth:`Signature.check_fits`).

A workflow is data too: what a step's message says about the workflow around it (:class:`ChainStep`,
:class:`ChordMember`, under ``workflow`` in the body and in the record's payload, so re-enqueue
republishes it intact; a malformed one is a poison message) and the ids workflows derive, never draw
(uuid5 of the finishing step's or the chord's id), so a redelivered step sends the same next step
again, which the backend's insert-if-absent create records once. It lives here, beside the signatures
it carries, because ``cogman.message`` parses it and sits below the ``workflows`` package.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from cogman.priority import Priority

if TYPE_CHECKING:
    from cogman.backends.base import Backend
    from cogman.result import AsyncResult


class RegisteredTask(Protocol):
    """A task as a signature checks its arguments against it (``cogman.task.Task``)."""

    @property
    def fn(self) -> Callable[..., Any]: ...
    @property
    def bind(self) -> bool: ...
    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None: ...


class SendScopes(Protocol):
    """Where a workflow's send tells middleware it begins and ends (``cogman.middleware.MiddlewareStack``),
    so its nested sends are one operation (one trace: docs/tracing.md)."""

    def sending(
        self, name: str, messages: Sequence[Any] = (), workflow: str | None = None
    ) -> AbstractContextManager[Any]: ...


class SendingApp(Protocol):
    """The app as the things it hands out (tasks, signatures, workflows, result handles) use it: the
    registry, the backend, and sending. ``cogman.App`` is one; declared here, below them all, so none of
    them imports the app."""

    @property
    def tasks(self) -> Mapping[str, RegisteredTask]: ...
    @property
    def backend(self) -> Backend: ...
    @property
    def middleware(self) -> SendScopes: ...
    def why_no_worker(self) -> str | None: ...
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
    ) -> AsyncResult[Any]: ...
    def send_many(
        self,
        name: str,
        calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        wait_confirmed: bool | None = None,
        **options: Any,
    ) -> list[AsyncResult[Any]]: ...


class Chained(Protocol):
    """What ``a.s() | b.s()`` builds: a ``cogman.chain`` (workflows/canvas.py), seen from below it."""

    def __or__(self, other: Any) -> Any: ...
    def delay(self) -> Any: ...


#: Options a signature carries to ``App.send_task`` (``countdown``, ``eta`` and ``expires`` delay or
#: expire the step it starts; see docs/scheduling.md).
SEND_OPTIONS = ("priority", "retry", "primary_key", "countdown", "eta", "expires")
#: Options whose value may be a datetime (carried as ISO 8601 text in JSON).
_MOMENTS = ("eta", "expires")


@dataclass(frozen=True, slots=True)
class Signature:
    """``add.s(1, 2)``, or by name from a process without the function: ``Signature("shop.add", (1, 2))``."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    #: The app to send with (set by ``Task.s``); never part of the JSON form.
    app: SendingApp | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        from cogman.message import check_json_arguments

        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"a signature needs a task name, got {self.name!r}")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs or {}))
        object.__setattr__(self, "options", _checked_options(self.name, self.options))
        check_json_arguments(self.name, self.args, self.kwargs)
        handler = self.app.tasks.get(self.name) if self.app is not None else None
        if handler is not None:
            try:
                inspect.signature(handler.fn).bind_partial(*([None] if handler.bind else []), *self.args, **self.kwargs)
            except TypeError as exc:
                raise TypeError(f"arguments do not fit {self.name}: {exc}") from None

    def set(self, **options: Any) -> Signature:
        """A copy with these send options added: ``priority``, ``retry``, ``primary_key``, ``countdown``,
        ``eta``, ``expires``."""
        return Signature(self.name, self.args, self.kwargs, {**self.options, **options}, self.app)

    def check_fits(self, received: int, where: str) -> None:
        """Raise TypeError if the handler cannot take ``received`` results in front of these arguments
        (``where`` names the step in the message). Unknown tasks are the worker's to check."""
        handler = self.app.tasks.get(self.name) if self.app is not None else None
        if handler is None:
            return
        try:
            handler.check_arguments((None,) * received + self.args, self.kwargs)
        except Exception as exc:
            gets = " (which also receives the previous result first)" if received else ""
            raise TypeError(f"{where}{gets}: {exc}") from None

    def send_options(self) -> dict[str, Any]:
        """The options as ``App.send_task`` keywords (ISO moments back to datetimes)."""
        return {k: datetime.fromisoformat(v) if k in _MOMENTS and isinstance(v, str) else v
                for k, v in self.options.items()}  # fmt: skip

    def delay(self, *, app: SendingApp | None = None) -> AsyncResult[Any]:
        """Send this call alone, with its options."""
        sender = app or self.app
        if sender is None:
            raise ValueError(f"signature {self.name} has no app: build it with task.s(...) or pass app=")
        return sender.send_task(self.name, args=self.args, kwargs=self.kwargs, **self.send_options())

    def __or__(self, other: Signature | Chained) -> Chained:
        from cogman.workflows.canvas import chain

        return chain(self, other)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.name, "args": list(self.args), "kwargs": self.kwargs, "options": self.options}

    @classmethod
    def from_dict(cls, data: Any, app: SendingApp | None = None) -> Signature:
        """Parse the JSON form; anything else raises ValueError saying what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"a signature is a JSON object, got {type(data).__name__}")
        args, kwargs, options = data.get("args", []), data.get("kwargs", {}), data.get("options", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(options, dict):
            raise ValueError("a signature's args must be a list, its kwargs and options objects")
        try:
            return cls(data.get("task"), tuple(args), kwargs, options, app)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ValueError(str(exc)) from None


def _checked_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options in their JSON form; unknown names and bad values raise TypeError / ValueError."""
    unknown = sorted(set(options) - set(SEND_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for {name}; known: {', '.join(SEND_OPTIONS)}")
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key == "priority":
            value = Priority.parse(value).value
        elif key == "retry" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"retry of {name} must be a non-negative integer, got {value!r}")
        elif key == "primary_key" and not isinstance(value, str):
            raise TypeError(f"primary_key of {name} must be a string, got {value!r}")
        elif key == "countdown" and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            raise ValueError(f"countdown of {name} must be a non-negative number of seconds, got {value!r}")
        elif key in _MOMENTS:
            value = _moment(name, key, value)
        checked[key] = value
    return checked


def _moment(name: str, key: str, value: Any) -> Any:
    """A datetime (naive means UTC) as ISO text; ``expires`` may also be seconds."""
    if key == "expires" and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{key} of {name} is not an ISO 8601 time: {value!r}") from None
    if not isinstance(value, datetime):
        raise TypeError(f"{key} of {name} must be a datetime, got {type(value).__name__}")
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


WORKFLOW_NAMESPACE = uuid.UUID("3d0f5c8e-2b7a-4e51-9c64-8a1f0e7b2d93")
#: How the fail_error of a step that never ran because of another one begins.
NOT_RUN = "not run: "


def next_step_id(step_id: str) -> str:
    """The id of the chain step after the step whose first attempt has ``step_id``."""
    return str(uuid.uuid5(WORKFLOW_NAMESPACE, f"next:{step_id}"))


def chain_ids(first_id: str, total: int) -> list[str]:
    ids = [first_id]
    while len(ids) < total:
        ids.append(next_step_id(ids[-1]))
    return ids


def callback_id(chord_id: str) -> str:
    """The id of a chord's callback: every member that completes the chord derives the same one."""
    return str(uuid.uuid5(WORKFLOW_NAMESPACE, f"callback:{chord_id}"))


@dataclass(frozen=True, slots=True)
class ChainStep:
    """This message is step ``position`` (1-based) of a chain of ``total``; ``rest`` follow it."""

    position: int
    total: int
    rest: tuple[Signature, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"chain": {"position": self.position, "total": self.total, "rest": [s.to_dict() for s in self.rest]}}


@dataclass(frozen=True, slots=True)
class ChordMember:
    """This message is member ``index`` (0-based) of chord ``chord_id`` of ``size`` members."""

    chord_id: str
    index: int
    size: int
    callback: Signature
    #: The callback runs even if members failed, with None in their places.
    partial: bool = False

    def to_dict(self) -> dict[str, Any]:
        chord = {"id": self.chord_id, "index": self.index, "size": self.size, "callback": self.callback.to_dict(),
                 "partial": self.partial}  # fmt: skip
        return {"chord": chord}


WorkflowSpec = ChainStep | ChordMember


def parse_workflow(data: Any) -> WorkflowSpec | None:
    """The spec of a message body or a record payload (None when absent); ValueError when malformed."""
    if data is None:
        return None
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError("workflow must be an object with one key, 'chain' or 'chord'")
    kind, body = next(iter(data.items()))
    if not isinstance(body, dict):
        raise ValueError(f"workflow {kind!r} must be an object")
    if kind == "chain":
        position, total, rest = _int(body, "position", 1), _int(body, "total", 2), body.get("rest")
        if not isinstance(rest, list) or not rest or position + len(rest) != total:
            raise ValueError(f"workflow chain: 'rest' must list the {total - position} step(s) after step {position}")
        return ChainStep(position, total, tuple(Signature.from_dict(step) for step in rest))
    if kind == "chord":
        chord_id, size, partial = body.get("id"), _int(body, "size", 1), body.get("partial", False)
        index = _int(body, "index", 0)
        if not isinstance(chord_id, str) or not chord_id or index >= size or not isinstance(partial, bool):
            raise ValueError("workflow chord: needs a string 'id', 'index' below 'size' and a boolean 'partial'")
        return ChordMember(chord_id, index, size, Signature.from_dict(body.get("callback")), partial)
    raise ValueError(f"unknown workflow kind {kind!r}; expected 'chain' or 'chord'")


def _int(body: dict[str, Any], name: str, least: int) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"workflow field {name!r} must be an integer of at least {least}, got {value!r}")
    return value
