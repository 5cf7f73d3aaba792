"""JSON on the wire and in the store: messages, records, argument checks, corrupt input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cogman.errors import CorruptRecord, PoisonMessage
from cogman.message import Message, check_json_arguments
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.status import Status


def make_message(**changes):
    fields = {
        "task_id": "t-1",
        "name": "resize",
        "original_task_id": "t-0",
        "priority": Priority.LOW,
        "args": (1, "a", [2]),
        "kwargs": {"k": {"n": None}},
        "primary_key": "img-42",
        "attempt": 2,
        "retries_left": 1,
    }
    fields.update(changes)
    return Message(**fields)


def test_message_round_trip_keeps_every_field():
    message = make_message()
    assert Message.decode(message.encode(), message.headers) == message


def test_message_headers_are_cogmans():
    assert make_message().headers == {"TaskName": "resize", "TaskID": "t-1"}


@pytest.mark.parametrize(
    ("body", "headers", "reason", "task_id"),
    [
        (b"\x80not json", {"TaskName": "x", "TaskID": "t"}, "not valid JSON", "t"),
        (b"[1, 2]", {"TaskName": "x", "TaskID": "t"}, "not an object", "t"),
        (b'{"task_id": "t", "name": "x"}', {"TaskName": "x"}, "missing header TaskID", "t"),
        (b'{"task_id": "t", "name": "x"}', {"TaskID": "t"}, "missing header TaskName", "t"),
        (b'{"task_id": "t", "name": "x"}', None, "missing header TaskID", "t"),
        (b'{"task_id": "t", "name": "y"}', {"TaskName": "x", "TaskID": "t"}, "do not match", "t"),
        (b'{"task_id": "t", "name": "x", "args": {}}', {"TaskName": "x", "TaskID": "t"}, "JSON array", "t"),
        (b'{"task_id": "t", "name": "x", "priority": "mid"}', {"TaskName": "x", "TaskID": "t"}, "priority", "t"),
    ],
)
def test_poison_messages_are_named(body, headers, reason, task_id):
    with pytest.raises(PoisonMessage, match=reason) as caught:
        Message.decode(body, headers)
    assert caught.value.task_id == task_id


def test_never_unpickles():
    import pickle

    body = pickle.dumps({"task_id": "t", "name": "x"})
    with pytest.raises(PoisonMessage, match="not valid JSON"):
        Message.decode(body, {"TaskName": "x", "TaskID": "t"})


def test_non_json_argument_is_named():
    with pytest.raises(TypeError, match=r"argument 1 of resize is not JSON-serialisable \(set\)"):
        check_json_arguments("resize", (1, {2}), {})
    with pytest.raises(TypeError, match="keyword argument 'when' of resize"):
        check_json_arguments("resize", (), {"when": datetime.now()})
    with pytest.raises(TypeError, match="argument 0"):
        check_json_arguments("resize", (float("nan"),), {})
    check_json_arguments("resize", (1, "x", [None], {"a": 1.5}), {"b": True})


def make_record(**changes):
    fields = {
        "task_id": "t-1",
        "name": "resize",
        "original_task_id": "t-1",
        "priority": Priority.HIGH,
        "payload": {"args": [1], "kwargs": {}},
        "status": Status.SUCCESS,
        "result": {"w": 640},
        "duration": 0.25,
        "created_at": datetime(2026, 11, 22, tzinfo=UTC),
    }
    fields.update(changes)
    return TaskRecord(**fields)


def test_record_round_trip():
    record = make_record(latest_attempt_id="t-2", fail_error=None, primary_key="k")
    assert TaskRecord.from_json(record.to_json(), "key") == record


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "expected a JSON object"),
        (b'{"task_id": "t"}', "KeyError"),
        (json.dumps({**make_record().to_dict(), "status": "done"}).encode(), "done"),
        (json.dumps({**make_record().to_dict(), "retry": "three"}).encode(), "retry"),
        (json.dumps({**make_record().to_dict(), "created_at": 5}).encode(), "timestamp"),
    ],
)
def test_corrupt_record_names_the_key(raw, reason):
    with pytest.raises(CorruptRecord, match=reason) as caught:
        TaskRecord.from_json(raw, "cogman:task:t-1")
    assert caught.value.key == "cogman:task:t-1"
    assert "cogman:task:t-1" in str(caught.value)


def test_priority_parse():
    assert Priority.parse("HIGH") is Priority.HIGH
    assert Priority.parse(Priority.LOW) is Priority.LOW
    with pytest.raises(ValueError, match="'medium'"):
        Priority.parse("medium")


def test_to_dict_carries_every_record_field():
    """to_dict is written out by hand (no deep copy per write): a new field must not be forgotten."""
    from dataclasses import fields

    from cogman.record import TaskRecord

    record = TaskRecord(task_id="t", name="n", original_task_id="t", priority=Priority.HIGH, payload={"args": []})
    assert set(record.to_dict()) == {f.name for f in fields(TaskRecord)}
    assert TaskRecord.from_dict(record.to_dict(), "key") == record


@pytest.mark.parametrize("shape", ["new", "finished"])
def test_the_redis_hash_holds_each_field_of_to_dict_json_encoded_and_reads_back(shape: str):
    """codec.hash_fields writes the fields out one by one (the send's hot path); ``to_dict`` stays the
    oracle: the same names, each value its JSON text, history as ``at:<status>``, and from_hash reads
    the record back unchanged."""
    from datetime import timedelta

    from cogman.backends import codec

    now = datetime(2026, 12, 6, 1, 2, 3, 456789, tzinfo=UTC)
    record = TaskRecord("t-1", "resiz\u00e9", "t-1", Priority.HIGH, {"args": [1, 2.5, "x"], "kwargs": {"k": None}},
                        created_at=now, updated_at=now)  # fmt: skip
    if shape == "finished":
        later = now + timedelta(seconds=1.5)
        record = record.evolve(
            status=Status.FAILED, primary_key="pk", retry=3, attempt=2, fail_error="E\n", traceback="tb",
            duration=0.25, result={"r": [1]}, latest_attempt_id="t-2", updated_at=later,
            history=((Status.INITIATED, now), (Status.FAILED, later)), eta=now, expires=later,
        )  # fmt: skip
    flat = codec.hash_fields(record)
    stored = dict(zip(flat[::2], flat[1::2], strict=True))
    expected = {name: json.dumps(value, separators=(",", ":")) for name, value in record.to_dict().items()}
    history = json.loads(expected.pop("history"))
    expected |= {codec.AT + status: json.dumps(moment) for status, moment in history}
    expected["_score"] = str(codec.to_us(now))
    assert stored == expected
    assert codec.from_hash({k.encode(): v.encode() for k, v in stored.items()}, "key") == record
