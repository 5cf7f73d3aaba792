"""Messages nothing can decode, without a broker: the body parser's failures become PoisonMessage, the
lenient frame reader turns properties py-amqp cannot decode into a poison Delivery and keeps the frame
stream in step, headers are made writable again for the dead-letter copy, and the worker's one poison
path dead-letters a delivery the transport marked."""

from __future__ import annotations

import json
import threading
from struct import pack
from typing import Any

import amqp
import pytest
from amqp.serialization import dumps

from cogman import App, Status
from cogman.brokers.base import HEADER_DEAD_LETTER_REASON
from cogman.brokers.rabbitmq.inbound import delivery_from_raw, lenient_frame_handler, sanitize_headers
from cogman.errors import PoisonMessage
from cogman.message import Message
from cogman.priority import Priority
from cogman.worker.execution import Executor, Outcome


def body(**fields: Any) -> bytes:
    data = {"task_id": "t-1", "name": "n", "original_task_id": "t-1", "args": []}
    data.update(fields)
    return json.dumps(data).encode()


HEADERS = {"TaskID": "t-1", "TaskName": "n"}


def test_deep_nesting_is_a_poison_message_not_a_recursion_error():
    with pytest.raises(PoisonMessage) as raised:
        Message.decode(b"[" * 100_000 + b"]" * 100_000, HEADERS)
    assert raised.value.reason == "body is nested too deeply to decode" and raised.value.task_id == "t-1"


@pytest.mark.parametrize("field", ["attempt", "retries_left"])
def test_an_overflowing_number_is_a_poison_message(field: str):
    raw = body()[:-1] + f', "{field}": 1e400}}'.encode()
    with pytest.raises(PoisonMessage, match="malformed message field: cannot convert float infinity"):
        Message.decode(raw, HEADERS)


def test_any_other_decoding_failure_is_a_poison_message(monkeypatch: pytest.MonkeyPatch):
    def broken(value: object) -> Priority:
        raise KeyError(value)

    monkeypatch.setattr(Priority, "parse", broken)
    with pytest.raises(PoisonMessage) as raised:
        Message.decode(body(), HEADERS)
    assert raised.value.reason.startswith("undecodable body (KeyError") and raised.value.task_id == "t-1"


class FakeConnection:
    bytes_recv = 0


def frames(delivery_tag: int, payload: bytes, properties: bytes) -> list[tuple[int, int, bytes]]:
    """The three frames of a basic.deliver on channel 1: method, content header, body."""
    method = pack(">HH", 60, 60) + dumps("sLbss", ["ctag", delivery_tag, False, "", "q"])
    header = pack(">HHQ", 60, 0, len(payload)) + properties
    return [(1, 1, method), (2, 1, header), (3, 1, payload)]


def read(frame_list: list[tuple[int, int, bytes]], max_size: int = 1024) -> list[Any]:
    """Feed frames to the lenient reader; the Deliveries it completes."""
    done: list[Any] = []
    handler = lenient_frame_handler(FakeConnection(), lambda channel, sig, args, msg: done.append((args, msg)))
    for frame in frame_list:
        handler(frame)
    deliveries = []
    for args, msg in done:
        msg.delivery_info = {"delivery_tag": amqp.serialization.loads("sL", args, 4)[0][1], "redelivered": False}
        deliveries.append(delivery_from_raw(msg, "q", Priority.HIGH, None, max_size))
    return deliveries


def props(**properties: Any) -> bytes:
    return amqp.Message(b"", **properties)._serialize_properties()


def test_undecodable_properties_make_a_poison_delivery_and_the_next_message_still_parses():
    bad = props(content_type=b"application/\xffjson", application_headers={"TaskID": "t-1", "n": 7})
    good = props(content_type="application/json", application_headers=HEADERS)

    first, second = read(frames(1, b"payload", bad) + frames(2, body(), good))

    assert first.poison is not None and first.poison.startswith("undecodable message properties (UnicodeDecodeError")
    assert first.body == b"payload" and first.headers == {"TaskID": "t-1", "n": 7}  # salvaged
    assert first.properties["content_type"] == "application/\\xffjson"
    assert second.poison is None and second.headers == HEADERS and second.body == body()


def test_a_header_table_that_cannot_be_parsed_keeps_what_came_before_it():
    table = b"\x01k" + b"S" + pack(">I", 1) + b"v" + b"\x01z" + b"Z"  # 'Z' is no AMQP field type
    properties = pack(">H", 0x8000 | 0x2000) + b"\x04text" + pack(">I", len(table)) + table

    (delivery,) = read(frames(1, b"x", properties))

    assert delivery.poison is not None and "undecodable message properties" in delivery.poison
    assert delivery.properties["content_type"] == "text" and delivery.headers == {"k": "v"}


@pytest.mark.parametrize(
    ("headers", "payload", "reason"),
    [
        (
            {"compression": "application/x-gzip"},
            b"x",
            "compressed message (compression='application/x-gzip'); cogman never decompresses",
        ),
        ({b"\xffname": "v"}, b"x", "header name b'\\xffname' is not UTF-8"),
        ({}, b"x" * 1025, "body of 1025 bytes is over max_message_size (1024 bytes)"),
    ],
)
def test_what_cogman_never_reads_is_poison(headers: dict[Any, Any], payload: bytes, reason: str):
    (delivery,) = read(frames(1, payload, props(application_headers=headers)))
    assert delivery.poison == reason and delivery.body == payload
    assert all(isinstance(name, str) for name in delivery.headers)


def test_redelivery_count_comes_from_its_header():
    (counted, foreign) = read(
        frames(1, b"x", props(application_headers={"x-cogman-redeliveries": 3}))
        + frames(2, b"x", props(application_headers={"x-cogman-redeliveries": "lots"}))
    )
    assert (counted.redeliveries, foreign.redeliveries) == (3, 0)


def test_sanitized_headers_can_be_written_back():
    raw = {
        b"\xffkey": "value",
        "surrogate": "\ud800",
        "é" * 200: 1,  # 400 bytes: longer than a short string may be
        "nested": {b"\xfe": [b"\xff", "\udc80", {"deep": "\ud801"}]},
        "plain": 5,
    }
    clean = sanitize_headers(raw)

    assert all(isinstance(name, str) and len(name.encode()) <= 255 for name in clean)
    assert clean["\\xffkey"] == "value" and clean["surrogate"] == "\\ud800" and clean["plain"] == 5
    assert clean["nested"] == {"\\xfe": [b"\xff", "\\udc80", {"deep": "\\ud801"}]}
    dumps("F", [clean])  # py-amqp can encode every name and value


def test_a_delivery_the_transport_marked_poison_is_dead_lettered_and_its_task_failed(app: App):
    result = app.send_task("t.never", args=(1,))
    consumer = app.broker.consume([Priority.HIGH], prefetch=2)
    delivery = consumer.receive(1)
    assert delivery is not None
    delivery.poison = "compressed message (compression='gzip'); cogman never decompresses"

    assert Executor(app, consumer, None, threading.Event()).execute(delivery) is Outcome.DEAD_LETTERED

    (letter,) = app.broker.dead_letters()
    assert letter.headers[HEADER_DEAD_LETTER_REASON] == delivery.poison
    record = app.backend.get(result.id)
    assert record is not None and record.status is Status.FAILED and record.fail_error == delivery.poison
