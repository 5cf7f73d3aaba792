"""Go Cogman's task record: the JSON string Go keeps under the bare TaskID, byte for byte.

Go's ``encoding/json`` of its ``util.Task`` (no JSON tags): the fields in struct order, ``Payload`` in
standard base64, ``Priority`` ``High``/``Low``, ``Duration`` seconds or null, times in RFC 3339 with
nanoseconds and trailing zeros trimmed (``time.RFC3339Nano``), and strings escaped as Go escapes them
(``<``, ``>``, ``&``, U+2028 and U+2029 as ``\\u`` escapes, other text as UTF-8). The Redis backend's Lua
(cogman/backends/redis/go_records.py) writes the same bytes; tests/unit/test_gowire.py checks both
against the captured records (/work/shared/reference/go-wire).

Statuses are cogman's (:class:`cogman.status.Status`, the same six words); the one difference is the
rank of ``retry``: Go ranks it above ``in_progress`` (4), so a Go retry attempt goes from ``retry``
straight to ``success`` or ``failed`` and a Go tool never sees it move back. :data:`GO_RANK` is
:data:`cogman.status.RANK` with that one change, and Go records follow it, as Go's own writers do.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cogman.errors import CorruptRecord
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.status import RANK, Status

#: Go's ranks: cogman's, except that ``retry`` outranks ``in_progress`` (Go's ``util.Status`` order).
GO_RANK: dict[Status, int] = {**RANK, Status.RETRY: 4}
#: The fields of Go's record, in the order Go writes them.
FIELDS = (
    "TaskID",
    "PrimaryKey",
    "Name",
    "OriginalTaskID",
    "Retry",
    "Payload",
    "Priority",
    "Status",
    "FailError",
    "Duration",
    "CreatedAt",
    "UpdatedAt",
)
GO_PRIORITY = {Priority.HIGH: "High", Priority.LOW: "Low"}
_FROM_GO_PRIORITY = {text: priority for priority, text in GO_PRIORITY.items()}
#: What Go's encoder writes as \u escapes on top of JSON's own (its HTML-safe default).
_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
#: The retry attempts cogman's workers make get ids derived from the failed attempt's (``go_retry_id``),
#: in the namespace of cogman's own retries (``cogman.sending.client.RETRY_NAMESPACE``), so the operator
#: views that follow derived ids (``cogman.admin.actions.chain``) find a Go chain's attempts too.
GO_RETRY_NAMESPACE = uuid.UUID("6f1c1d2e-9a4b-4c7e-8f3a-2b5d7e9c1a04")
_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029]')


def go_retry_id(failed_task_id: str) -> str:
    """The id of the retry attempt a cogman worker makes of a failed Go-format attempt: derived from it,
    so a failure delivered twice spends the budget once, and a reader can follow the chain."""
    return str(uuid.uuid5(GO_RETRY_NAMESPACE, failed_task_id))


def go_allows(current: Status | None, new: Status) -> bool:
    """Go's update rule: a write happens only if it outranks the current status (None: no record)."""
    return current is None or GO_RANK[new] > GO_RANK[current]


def go_time(nanoseconds: int | None = None) -> str:
    """A moment (now by default) as Go's RFC3339Nano in UTC: ``2026-12-05T14:18:20.38643883Z``."""
    ns = time.time_ns() if nanoseconds is None else nanoseconds
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def parse_go_time(text: str) -> datetime:
    """A Go RFC 3339 time (any fraction length, ``Z`` or an offset) as an aware datetime; ValueError."""
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def go_float(value: float) -> str:
    """A float64 as Go's encoding/json writes it: the shortest digits, positional, or in exponent form
    below 1e-6 and from 1e21 (``5e-7``, ``1.5e+21``)."""
    shortest = Decimal(repr(float(value)))
    if value != 0 and (abs(value) < 1e-6 or abs(value) >= 1e21):
        sign, digits, exponent = shortest.as_tuple()
        text = "".join(map(str, digits)).rstrip("0") or "0"
        power = int(exponent) + len(digits) - 1
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        exponent_text = f"{power:+d}" if power < 0 else f"+{power:02d}"
        return f"{'-' if sign else ''}{mantissa}e{exponent_text}"
    text = format(shortest, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def go_string(value: str) -> str:
    """A JSON string as Go's encoder writes it."""
    return '"' + _NEEDS_ESCAPE.sub(_escape, value) + '"'


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _GO_ESCAPES.get(char) or f"\\u{ord(char):04x}"


@dataclass(frozen=True, slots=True)
class GoRecord:
    """One attempt of a Go-format task, with Go's fields. Times stay the text Go wrote, so a record
    read and written back keeps them byte for byte."""

    task_id: str
    name: str
    original_task_id: str
    payload: bytes
    priority: Priority = Priority.HIGH
    status: Status = Status.INITIATED
    primary_key: str = ""
    retry: int = 0
    fail_error: str = ""
    duration: float | None = None
    created_at: str = ""
    updated_at: str = ""

    @classmethod
    def new(cls, task_id: str, name: str, payload: bytes, **fields: Any) -> GoRecord:
        """A first attempt (``initiated``, its own original) or, with ``status=retry``, a retry."""
        now = go_time()
        fields.setdefault("original_task_id", task_id)
        return cls(task_id=task_id, name=name, payload=payload, created_at=now, updated_at=now, **fields)

    def retry_attempt(self, task_id: str) -> GoRecord:
        """The next attempt of this record's chain, as Go's ``RetryTask`` makes it: status ``retry``,
        ``Retry`` 0, the same name, payload, priority and original; ``PrimaryKey`` not copied."""
        return GoRecord.new(
            task_id,
            self.name,
            self.payload,
            original_task_id=self.original_task_id,
            priority=self.priority,
            status=Status.RETRY,
        )

    def evolve(self, **changes: Any) -> GoRecord:
        return replace(self, **changes)

    def to_json(self) -> str:
        """The record as Go Cogman stores it."""
        values = (
            go_string(self.task_id),
            go_string(self.primary_key),
            go_string(self.name),
            go_string(self.original_task_id),
            str(int(self.retry)),
            go_string(base64.b64encode(self.payload).decode()),
            go_string(GO_PRIORITY[self.priority]),
            go_string(self.status.value),
            go_string(self.fail_error),
            "null" if self.duration is None else go_float(self.duration),
            go_string(self.created_at),
            go_string(self.updated_at),
        )
        return "{" + ",".join(f'"{name}":{value}' for name, value in zip(FIELDS, values, strict=True)) + "}"

    @classmethod
    def from_json(cls, raw: str | bytes, key: str) -> GoRecord:
        """Parse Go's JSON; anything else raises CorruptRecord naming ``key``."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptRecord(key, f"not JSON: {exc}") from None
        if not isinstance(data, dict) or "TaskID" not in data or "Status" not in data:
            raise CorruptRecord(key, "not a Go Cogman task record (no TaskID and Status)")
        try:
            payload = data.get("Payload")
            duration = data.get("Duration")
            return cls(
                task_id=_text(data, "TaskID"),
                name=_text(data, "Name"),
                original_task_id=_text(data, "OriginalTaskID") or _text(data, "TaskID"),
                payload=b"" if payload is None else base64.b64decode(payload, validate=True),
                priority=_FROM_GO_PRIORITY[data.get("Priority", "High")],
                status=Status(data["Status"]),
                primary_key=_text(data, "PrimaryKey"),
                retry=int(data.get("Retry") or 0),
                fail_error=_text(data, "FailError"),
                duration=None if duration is None else float(duration),
                created_at=_text(data, "CreatedAt"),
                updated_at=_text(data, "UpdatedAt"),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise CorruptRecord(key, f"unreadable Go Cogman task record ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_go_document(cls, doc: dict[str, Any], key: str) -> GoRecord:
        """A document Go Cogman keeps in MongoDB (``cogman.tasks``: snake_case fields, ``payload``
        binary, BSON dates); CorruptRecord naming ``key`` when it is not one."""
        try:
            duration = doc.get("duration")
            return cls(
                task_id=str(doc["task_id"]),
                name=str(doc["name"]),
                original_task_id=str(doc.get("original_task_id") or doc["task_id"]),
                payload=bytes(doc.get("payload") or b""),
                priority=_FROM_GO_PRIORITY[doc.get("priority") or "High"],
                status=Status(doc["status"]),
                primary_key=str(doc.get("primary_key") or ""),
                retry=int(doc.get("retry") or 0),
                fail_error=str(doc.get("fail_error") or ""),
                duration=None if duration is None else float(duration),
                created_at=_go_moment(doc.get("created_at")),
                updated_at=_go_moment(doc.get("updated_at") or doc.get("created_at")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRecord(key, f"not a Go Cogman task document ({type(exc).__name__}: {exc})") from None

    def to_task_record(self) -> TaskRecord:
        """The record as cogman's readers show it (``AsyncResult``, ``cogman status``, the REST API):
        the payload base64 in ``payload["go_payload"]``, no result (Go stores none)."""
        created = _moment(self.created_at)
        updated = _moment(self.updated_at) if self.updated_at else created
        return TaskRecord(
            task_id=self.task_id,
            name=self.name,
            original_task_id=self.original_task_id,
            priority=self.priority,
            payload={"args": [], "kwargs": {}, "wire": "go", "go_payload": base64.b64encode(self.payload).decode()},
            status=self.status,
            primary_key=self.primary_key or None,
            retry=self.retry,
            attempt=1 if self.task_id == self.original_task_id else 2,
            fail_error=self.fail_error or None,
            duration=self.duration,
            created_at=created,
            updated_at=updated,
            history=((self.status, updated),),
        )


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{name} is a {type(value).__name__}, not a string")
    return value


def _moment(text: str) -> datetime:
    try:
        return parse_go_time(text)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)


def _go_moment(value: Any) -> str:
    """A BSON date (naive UTC from pymongo unless tz-aware) as Go's time text; "" when absent."""
    if not isinstance(value, datetime):
        return ""
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return go_time(int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000)
