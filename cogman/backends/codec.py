"""How a TaskRecord is laid out in Redis and in MongoDB, and back; see docs/backends.md.

Timestamps are also kept as integer microseconds since the epoch: exact (a float score or a BSON date
would round them), so records sort, filter and compare in the stores as they do in memory.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cogman.backends.base import TaskQuery
from cogman.errors import CorruptRecord
from cogman.record import TaskRecord

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Fields stored as they are in a MongoDB document (the rest: JSON text, dates, microseconds).
PLAIN = ("task_id", "name", "original_task_id", "priority", "status", "primary_key", "retry", "attempt",
         "fail_error", "traceback", "duration", "latest_attempt_id")  # fmt: skip
#: Optional moments of a record, kept in a MongoDB document as a date and exactly as ``<name>_us``.
MOMENTS = ("eta", "expires")


def to_us(moment: datetime) -> int:
    """Exact integer microseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


#: One encoder for every field: ``json.dumps`` with options builds a new encoder on each call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


_encode_str = json.encoder.encode_basestring_ascii  # what the encoder does for a str, in C


def dumps(value: Any) -> str:
    """A field's JSON text; strings, None and integers (most fields) skip the encoder's call chain."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    return _ENCODER.encode(value)


# Redis: one hash per attempt, each field JSON-encoded, plus ``_score`` (created_at in microseconds)


#: A record's hash keeps when each status was reached in fields named ``at:<status>``.
AT = "at:"


def hash_fields(record: TaskRecord) -> list[str]:
    """Flat field/value list of a record's hash: ``to_dict``'s fields, each JSON-encoded, written out
    field by field (a send encodes one per task; the dict and three ``isoformat`` calls of a new
    record's one moment were a tenth of it)."""
    created = record.created_at
    created_text = _encode_str(created.isoformat())
    fields = [
        "task_id", _encode_str(record.task_id),
        "name", _encode_str(record.name),
        "original_task_id", _encode_str(record.original_task_id),
        "priority", _encode_str(record.priority.value),
        "payload", _ENCODER.encode(record.payload),
        "status", _encode_str(record.status.value),
        "primary_key", dumps(record.primary_key),
        "retry", dumps(record.retry),
        "attempt", dumps(record.attempt),
        "fail_error", dumps(record.fail_error),
        "traceback", dumps(record.traceback),
        "duration", dumps(record.duration),
        "result", dumps(record.result),
        "latest_attempt_id", dumps(record.latest_attempt_id),
        "created_at", created_text,
        "updated_at", created_text if record.updated_at == created else _encode_str(record.updated_at.isoformat()),
    ]  # fmt: skip
    for status, moment in record.history:
        fields += [AT + status.value, created_text if moment == created else _encode_str(moment.isoformat())]
    fields += ["eta", _moment(record.eta), "expires", _moment(record.expires), "_score", str(to_us(created))]
    return fields


def _moment(moment: datetime | None) -> str:
    return "null" if moment is None else _encode_str(moment.isoformat())


def from_hash(flat: dict[bytes, bytes], key: str) -> TaskRecord:
    data: dict[str, Any] = {}
    history: list[list[Any]] = []
    for raw_name, raw_value in flat.items():
        name = raw_name.decode("utf-8", "replace")
        if name.startswith("_"):
            continue
        try:
            value = json.loads(raw_value)
        except (ValueError, UnicodeDecodeError):
            raise CorruptRecord(key, f"field {name!r} is not JSON: {raw_value[:80]!r}") from None
        if name.startswith(AT):
            history.append([name[len(AT) :], value])
        else:
            data[name] = value
    data["history"] = history
    return TaskRecord.from_dict(data, key)


# MongoDB: one document per attempt


def to_document(record: TaskRecord) -> dict[str, Any]:
    doc: dict[str, Any] = {name: getattr(record, name) for name in PLAIN}
    doc["priority"] = record.priority.value
    doc["status"] = record.status.value
    doc["payload"] = dumps(record.payload)
    doc["result"] = dumps(record.result)
    doc["created_at"], doc["created_us"] = record.created_at, to_us(record.created_at)
    doc["updated_at"], doc["updated_us"] = record.updated_at, to_us(record.updated_at)
    doc["at"] = {status.value: to_us(moment) for status, moment in record.history}  # exact microseconds
    for name in MOMENTS:
        moment = getattr(record, name)
        doc[name], doc[f"{name}_us"] = moment, None if moment is None else to_us(moment)
    return doc


def from_document(doc: dict[str, Any], key: str) -> TaskRecord:
    data = {name: doc.get(name) for name in PLAIN if name in doc}
    for name in ("payload", "result"):
        value = doc.get(name)
        try:
            data[name] = json.loads(value) if isinstance(value, str) else value
        except ValueError as exc:
            raise CorruptRecord(key, f"field {name!r} is not JSON ({exc})") from None
    for name in ("created", "updated"):
        exact = doc.get(f"{name}_us")
        data[f"{name}_at"] = from_us(exact) if isinstance(exact, int) else doc.get(f"{name}_at")
    for name in MOMENTS:
        exact = doc.get(f"{name}_us")
        data[name] = from_us(exact) if isinstance(exact, int) else doc.get(name)
    at = doc.get("at")
    data["history"] = (
        [[status, from_us(moment) if isinstance(moment, int) else moment] for status, moment in at.items()]
        if isinstance(at, dict)
        else None
    )
    return TaskRecord.from_dict(data, key)


def document_filter(query: TaskQuery) -> dict[str, Any]:
    """The MongoDB filter of a query. The created range is given twice: on the BSON date (milliseconds,
    widened to a superset, so the indexes serve it) and exactly on the microseconds."""
    match: dict[str, Any] = {}
    if query.status is not None:
        match["status"] = query.status.value
    if query.name is not None:
        match["name"] = query.name
    if query.primary_key is not None:
        match["primary_key"] = query.primary_key
    exact: dict[str, int] = {}
    coarse: dict[str, datetime] = {}
    if query.created_after is not None:
        exact["$gte"] = to_us(query.created_after)
        coarse["$gte"] = from_us(exact["$gte"] // 1000 * 1000)
    if query.created_before is not None:
        exact["$lte"] = to_us(query.created_before)
        coarse["$lte"] = from_us(exact["$lte"] // 1000 * 1000 + 999)
    if exact:
        match["created_at"] = coarse
        match["created_us"] = exact
    return match
