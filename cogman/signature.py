"""Signature: one task call as data (task name, arguments, send options), the brick of chain, group, chord.

A signature travels inside the messages of a workflow (the steps after a chain's current one, a chord's
callback), so it is JSON and nothing else: ``to_dict`` / ``from_dict``. Arguments are checked where they
are built, against the handler when the task is registered in the app: JSON-serialisable, and not more
or other arguments than the handler takes (a step of a chain gets the previous result in front of its
own arguments, so the full fit is checked when the workflow is sent, by :meth:`Signature.check_fits`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cogman.priority import Priority

if TYPE_CHECKING:
    from cogman.app import App
    from cogman.canvas import chain
    from cogman.result import AsyncResult

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
    app: App | None = field(default=None, compare=False, repr=False)

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

    def delay(self, *, app: App | None = None) -> AsyncResult[Any]:
        """Send this call alone, with its options."""
        sender = app or self.app
        if sender is None:
            raise ValueError(f"signature {self.name} has no app: build it with task.s(...) or pass app=")
        return sender.send_task(self.name, args=self.args, kwargs=self.kwargs, **self.send_options())

    def __or__(self, other: Signature | chain) -> chain:
        from cogman.canvas import chain

        return chain(self, other)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.name, "args": list(self.args), "kwargs": self.kwargs, "options": self.options}

    @classmethod
    def from_dict(cls, data: Any, app: App | None = None) -> Signature:
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
