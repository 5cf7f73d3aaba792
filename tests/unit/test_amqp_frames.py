"""cogman packs basic.publish and basic.ack frames itself (cogman/brokers/rabbitmq/amqp_frames.py): the bytes must
be exactly what py-amqp's own frame writer produces for the same message."""

from __future__ import annotations

from typing import Any

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps

from cogman.brokers.rabbitmq.amqp_frames import ack_frames, publish_frames


class _Capture:
    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max
        self.bytes_sent = 0
        self.written = bytearray()

    def write(self, data: Any) -> None:
        self.written += bytes(data)


def _py_amqp_publish(channel: int, exchange: str, routing_key: str, body: bytes, frame_max: int, **props: Any) -> bytes:
    capture = _Capture(frame_max)
    write = frame_writer(capture, capture)
    message = amqp.Message(body, delivery_mode=2, **props)
    write(1, channel, spec.Basic.Publish, dumps("Bssbb", (0, exchange, routing_key, True, False)), message)
    return bytes(capture.written)


@pytest.mark.parametrize(
    ("body", "frame_max"),
    [
        (b'{"task_id":"t-1","args":[1,2]}', 131072),
        ('{"k": "\u00e9t\u00e9 \u2603"}'.encode(), 131072),
        (b"", 131072),
        (b"x" * 10_000, 4096),  # split into body frames of frame_max - 8 bytes
        (b"y" * 4088, 4096),  # exactly one full body frame
    ],
)
def test_publish_frames_match_py_amqp_byte_for_byte(body: bytes, frame_max: int) -> None:
    headers = {"TaskName": "app.d\u00e9j\u00e0", "TaskID": "0b7c-\u2603"}
    ours = publish_frames(
        3,
        "cogman.delay",
        "high_priority_queue_1",
        body,
        headers=headers,
        message_id="0b7c-\u2603",
        content_type="application/json",
        content_encoding="utf-8",
        frame_max=frame_max,
    )
    theirs = _py_amqp_publish(
        3,
        "cogman.delay",
        "high_priority_queue_1",
        body,
        frame_max,
        application_headers=headers,
        message_id="0b7c-\u2603",
        content_type="application/json",
        content_encoding="utf-8",
    )
    assert ours == theirs


def test_ack_frames_match_py_amqp_byte_for_byte() -> None:
    capture = _Capture(131072)
    write = frame_writer(capture, capture)
    tags = [1, 7, 2**40 + 5]
    for tag in tags:
        write(1, 2, spec.Basic.Ack, dumps("Lb", (tag, False)), None)
    assert ack_frames(2, tags) == bytes(capture.written)


def test_a_routing_key_over_255_bytes_is_refused_with_its_start() -> None:
    with pytest.raises(ValueError, match="over 255 bytes"):
        publish_frames(
            1,
            "",
            "q" * 256,
            b"{}",
            headers={},
            message_id="m",
            content_type="application/json",
            content_encoding="utf-8",
            frame_max=131072,
        )
