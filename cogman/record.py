"""TaskRecord: what a backend stores about one attempt of a task, and its JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cogman.errors import CorruptRecord
from cogman.priority import Priority
from cogman.status import Status


def utcnow() -> datetime:
    return datetime.now(UTC)


def clip(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes plus a ``...[truncated N bytes]`` marker, so a handler's
    huge exception message cannot bloat every record and API page; a traceback keeps its end, where the
    error is. The cut falls between characters; lone surrogates (``surrogateescape``) survive."""
    if len(text) * 4 <= limit:  # no character is over 4 bytes: short enough without encoding it
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    if keep_end:
        start = len(data) - limit
        while start < len(data) and data[start] & 0xC0 == 0x80:  # a continuation byte: not a char's start
            start += 1
        return f"...[truncated {start} bytes]\n" + data[start:].decode("utf-8", "surrogatepass")
    end = limit
    while end > 0 and data[end] & 0xC0 == 0x80:
        end -= 1
    return data[:end].decode("utf-8", "surrogatepass") + f"...[truncated {len(data) - end} bytes]"


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One attempt of a task. Cogman's fields, plus ``result``, ``attempt`` and ``latest_attempt_id``.

    The retry budget (``retry``) is meaningful on the original attempt only; ``latest_attempt_id`` is set
    on the original when a retry attempt is created, so a result handle can follow the chain.
    """

    task_id: str
    name: str
    original_task_id: str
    priority: Priority
    payload: dict[str, Any]
    status: Status = Status.INITIATED
    primary_key: str | None = None
    retry: int = 0
    attempt: int = 1
    fail_error: str | None = None
    #: The failed attempt's traceback, its last ``Config.max_error_size`` bytes.
    traceback: str | None = None
    duration: float | None = None
    result: Any = None
    latest_attempt_id: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    #: When the attempt reached each status it went through, oldest first (its creation status at
    #: ``created_at`` when nothing else is known).
    history: tuple[tuple[Status, datetime], ...] = ()
    #: When the task was planned to start (``countdown``/``eta``, or a retry's backoff); None: at once.
    eta: datetime | None = None
    #: When it expires: not started by then, it is recorded failed and never runs.
    expires: datetime | None = None

    def __post_init__(self) -> None:
        if not self.history:
            object.__setattr__(self, "history", ((self.status, self.created_at),))

    @property
    def is_original(self) -> bool:
        return self.task_id == self.original_task_id

    @property
    def args(self) -> list[Any]:
        return list(self.payload.get("args", []))

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.payload.get("kwargs", {}))

    def evolve(self, **changes: Any) -> TaskRecord:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: enums as their values, datetimes as ISO 8601 strings. Payload and result are
        the record's own objects, not copies (``dataclasses.asdict`` deep-copied them on every write)."""
        return {
            "task_id": self.task_id,
            "name": self.name,
            "original_task_id": self.original_task_id,
            "priority": self.priority.value,
            "payload": self.payload,
            "status": self.status.value,
            "primary_key": self.primary_key,
            "retry": self.retry,
            "attempt": self.attempt,
            "fail_error": self.fail_error,
            "traceback": self.traceback,
            "duration": self.duration,
            "result": self.result,
            "latest_attempt_id": self.latest_attempt_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "history": [[status.value, moment.isoformat()] for status, moment in self.history],
            "eta": None if self.eta is None else self.eta.isoformat(),
            "expires": None if self.expires is None else self.expires.isoformat(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any, key: str) -> TaskRecord:
        """Parse a stored record; anything that is not cogman's shape raises CorruptRecord naming ``key``."""
        if not isinstance(data, dict):
            raise CorruptRecord(key, f"expected a JSON object, got {type(data).__name__}")
        try:
            return cls(
                task_id=_string(data, "task_id"),
                name=_string(data, "name"),
                original_task_id=_string(data, "original_task_id"),
                priority=Priority(data["priority"]),
                payload=_payload(data.get("payload")),
                status=Status(data["status"]),
                primary_key=_optional(data, "primary_key", str),
                retry=_integer(data, "retry"),
                attempt=_integer(data, "attempt", default=1),
                fail_error=_optional(data, "fail_error", str),
                traceback=_optional(data, "traceback", str),
                duration=_optional(data, "duration", (int, float)),
                result=data.get("result"),
                latest_attempt_id=_optional(data, "latest_attempt_id", str),
                created_at=_datetime(data["created_at"]),
                updated_at=_datetime(data["updated_at"]),
                history=_history(data.get("history")),
                eta=_optional_datetime(data.get("eta")),
                expires=_optional_datetime(data.get("expires")),
            )
        except CorruptRecord:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRecord(key, f"{type(exc).__name__}: {exc}") from None

    @classmethod
    def from_json(cls, raw: str | bytes, key: str) -> TaskRecord:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptRecord(key, f"not JSON ({exc})") from None
        return cls.from_dict(data, key)


def _string(data: dict[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value:
        raise TypeError(f"field {name!r} must be a non-empty string, got {value!r}")
    return value


def _integer(data: dict[str, Any], name: str, default: int | None = None) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"field {name!r} must be an integer, got {value!r}")
    return value


def _optional(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise TypeError(f"field {name!r} has the wrong type: {value!r}")
    return value


def _payload(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"field 'payload' must be an object with args and kwargs, got {value!r}")
    return value


def _datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise TypeError(f"timestamp must be an ISO 8601 string, got {value!r}")
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _optional_datetime(value: Any) -> datetime | None:
    return None if value is None else _datetime(value)


def _history(value: Any) -> tuple[tuple[Status, datetime], ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise TypeError(f"field 'history' must be a list of [status, time], got {value!r}")
    entries = [(Status(status), _datetime(moment)) for status, moment in value]
    return tuple(sorted(entries, key=lambda entry: entry[1]))
