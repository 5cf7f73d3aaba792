"""Message: what travels through a broker, and its JSON wire form.

Only JSON ever crosses the wire, in both directions; nothing received from a broker is unpickled.
The headers ``TaskName`` and ``TaskID`` are Cogman's, so operators and the Go tooling recognise messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cogman.errors import PoisonMessage
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.signature import WorkflowSpec, parse_workflow

#: Strict JSON (no NaN or infinities), compact; one encoder for every message.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

HEADER_TASK_NAME = "TaskName"
HEADER_TASK_ID = "TaskID"
#: Set on the first publish of a task sent with a generated id: this copy is the only one, so a worker
#: runs it without waiting for its ``in_progress`` write (cogman/worker/first_run.py). Never on a copy
#: sent again (a retry, a re-enqueue, an outbox replay, a workflow's step), which waits for it.
HEADER_FIRST = "x-cogman-first"
#: The W3C trace context headers (docs/tracing.md): set by the tracing middleware, kept by ``decode``.
TRACE_HEADERS = ("traceparent", "tracestate")
CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Message:
    """One attempt of a task, as sent to the broker."""

    task_id: str
    name: str
    original_task_id: str
    priority: Priority
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    primary_key: str | None = None
    attempt: int = 1
    retries_left: int = 0
    #: The chain or chord this attempt is a step of (cogman/signature.py); None for a plain task.
    workflow: WorkflowSpec | None = None
    #: Not to start before (``countdown``/``eta``); on the wire only when set, as ISO 8601.
    eta: datetime | None = None
    #: Not to start after: a worker records it failed ("expired") instead.
    expires: datetime | None = None
    #: A Go-format message (cogman/gowire): this payload is the body, raw, with no JSON envelope and no
    #: ``content_type``; ``args`` is ``(raw_body,)`` for the handler.
    raw_body: bytes | None = field(default=None, repr=False)
    #: The encoded body, made once: the size check at send time and the publisher use the same bytes.
    _encoded: bytes | None = field(default=None, compare=False, repr=False)
    #: The trace context travelling beside the body (``TRACE_HEADERS``), None when there is none: set by a
    #: ``before_send`` hook (:meth:`carry`), read back from a delivery's headers by ``decode``.
    trace_context: dict[str, str] | None = field(default=None, compare=False, repr=False)
    #: Carries ``HEADER_FIRST`` until it was published once (:meth:`sent`); never read back by ``decode``.
    first: bool = field(default=False, compare=False, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        headers = {HEADER_TASK_NAME: self.name, HEADER_TASK_ID: self.task_id}
        if self.trace_context:
            headers.update(self.trace_context)
        if self.first:
            headers[HEADER_FIRST] = "1"
        return headers

    def sent(self) -> None:
        """Published once: a copy sent again (an orphan of a dropped connection) is not the first."""
        if self.first:
            object.__setattr__(self, "first", False)

    def carry(self, trace_context: dict[str, str]) -> None:
        """Have the message carry these trace headers (the body, encoded once, is unchanged); for a
        ``before_send`` hook, before the publish. Only the ``TRACE_HEADERS`` names are kept. A Go-format
        message carries none: it keeps exactly the two headers Go Cogman sends (docs/go-interop.md)."""
        if self.raw_body is not None:
            return
        kept = {key: value for key, value in trace_context.items() if key in TRACE_HEADERS and isinstance(value, str)}
        object.__setattr__(self, "trace_context", kept or None)

    def encode(self) -> bytes:
        """The JSON body (strict: NaN and infinities are refused, as JSON has none); encoded once."""
        if self._encoded is not None:
            return self._encoded
        if self.raw_body is not None:
            return self.raw_body
        data: dict[str, Any] = {
            "task_id": self.task_id,
            "name": self.name,
            "original_task_id": self.original_task_id,
            "priority": self.priority.value,
            "args": list(self.args),
            "kwargs": self.kwargs or {},
            "primary_key": self.primary_key,
            "attempt": self.attempt,
            "retries_left": self.retries_left,
        }
        if self.workflow is not None:
            data["workflow"] = self.workflow.to_dict()
        if self.eta is not None:
            data["eta"] = self.eta.isoformat()
        if self.expires is not None:
            data["expires"] = self.expires.isoformat()
        body = _ENCODER.encode(data).encode()
        object.__setattr__(self, "_encoded", body)
        return body

    @classmethod
    def decode(cls, body: bytes, headers: dict[str, Any] | None) -> Message:
        """Parse a delivery. Anything that can never run raises PoisonMessage with the reason.

        Whatever the body does to the parser (nesting deep enough for a RecursionError, ``1e400``
        overflowing an integer field, anything else) is a poison message: dead-lettered once, never
        an error that gives the message back to the broker to fail again."""
        headers = headers or {}
        try:
            return cls._decode(body, headers)
        except PoisonMessage:
            raise
        except RecursionError:
            raise PoisonMessage("body is nested too deeply to decode", header_task_id(headers)) from None
        except Exception as exc:
            reason = f"undecodable body ({type(exc).__name__}: {exc})"
            raise PoisonMessage(reason, header_task_id(headers)) from None

    @classmethod
    def _decode(cls, body: bytes, headers: dict[str, Any]) -> Message:
        task_id = header_task_id(headers)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PoisonMessage(f"body is not valid JSON: {exc}", task_id) from None
        if not isinstance(data, dict):
            raise PoisonMessage(f"body is a JSON {type(data).__name__}, not an object", task_id)
        if task_id is None:
            raise PoisonMessage(f"missing header {HEADER_TASK_ID}", _str_or_none(data.get("task_id")))
        header_name = headers.get(HEADER_TASK_NAME)
        if not isinstance(header_name, str) or not header_name:
            raise PoisonMessage(f"missing header {HEADER_TASK_NAME}", task_id)
        if data.get("task_id") != task_id or data.get("name") != header_name:
            raise PoisonMessage("headers TaskID/TaskName do not match the body", task_id)
        args, kwargs = data.get("args", []), data.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise PoisonMessage("args must be a JSON array and kwargs a JSON object", task_id)
        try:
            workflow = parse_workflow(data.get("workflow"))
        except (TypeError, ValueError) as exc:
            raise PoisonMessage(f"malformed workflow: {exc}", task_id) from None
        try:
            return cls(
                task_id=task_id,
                name=header_name,
                original_task_id=str(data.get("original_task_id") or task_id),
                priority=Priority.parse(data.get("priority", "high")),
                args=tuple(args),
                kwargs=kwargs,
                primary_key=_str_or_none(data.get("primary_key")),
                attempt=int(data.get("attempt", 1)),
                retries_left=max(0, int(data.get("retries_left", 0))),
                workflow=workflow,
                eta=_moment_or_none(data.get("eta")),
                expires=_moment_or_none(data.get("expires")),
                trace_context=_trace_context(headers),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            raise PoisonMessage(f"malformed message field: {exc}", task_id) from None

    @classmethod
    def for_record(cls, record: TaskRecord, retries_left: int, first: bool = False) -> Message:
        return cls(
            task_id=record.task_id,
            name=record.name,
            original_task_id=record.original_task_id,
            priority=record.priority,
            args=tuple(record.args),
            kwargs=record.kwargs,
            primary_key=record.primary_key,
            attempt=record.attempt,
            retries_left=retries_left,
            workflow=parse_workflow(record.payload.get("workflow")),
            eta=record.eta,
            expires=record.expires,
            first=first,
        )


def header_task_id(headers: dict[str, Any]) -> str | None:
    """The ``TaskID`` header when it is a non-empty string (a foreign message may carry anything)."""
    value = headers.get(HEADER_TASK_ID)
    return value if isinstance(value, str) and value else None


def _trace_context(headers: dict[str, Any]) -> dict[str, str] | None:
    """The W3C trace headers of a delivery, when it has them (two lookups when it has none)."""
    found = {name: value for name in TRACE_HEADERS if isinstance(value := headers.get(name), str)}
    return found or None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _moment_or_none(value: Any) -> datetime | None:
    """An ISO 8601 moment (naive means UTC); anything else raises TypeError or ValueError."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"a moment must be an ISO 8601 string, got {value!r}")
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check_json_arguments(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise TypeError naming the first argument that JSON cannot carry (tuples travel as lists)."""
    try:
        json.dumps((args, kwargs), allow_nan=False)
        return
    except (TypeError, ValueError):
        pass
    for index, value in enumerate(args):
        _check_one(value, f"argument {index} of {task_name}")
    for key, value in kwargs.items():
        if not isinstance(key, str):
            raise TypeError(f"keyword argument name {key!r} of {task_name} is not a string")
        _check_one(value, f"keyword argument {key!r} of {task_name}")


def _check_one(value: Any, where: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where} is not JSON-serialisable ({type(value).__name__}): {exc}") from None
