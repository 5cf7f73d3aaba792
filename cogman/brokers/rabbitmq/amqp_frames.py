"""basic.publish as bytes: the method, content header and body frames of one message, in one buffer.

Why not py-amqp's ``basic_publish``: for each message it polls the socket for a ``connection.blocked``
notification (a timeout change and a failed read), builds a Message object and serializes its
properties field by field in Python: about 80 us of a ``.delay()``'s CPU (docs/performance.md).
cogman's messages always carry the same five properties, so the frames are packed here with
``struct``; the publisher's flusher thread reads the socket meanwhile (confirms, blocked/unblocked),
and every write still goes through py-amqp's transport under the publisher's I/O lock.

tests/unit/test_amqp_frames.py checks the bytes against py-amqp's own frame writer.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3
FRAME_END = b"\xce"
#: Frame type, channel, payload size; the payload; the end octet.
FRAME_OVERHEAD = 8
BASIC_CLASS, PUBLISH_METHOD = 60, 40
#: Property flags of content_type, content_encoding, headers, delivery_mode and message_id.
FLAGS = (1 << 15) | (1 << 14) | (1 << 13) | (1 << 12) | (1 << 7)
#: A Go-format message's (cogman/gowire): headers, delivery_mode and message_id only, as Go Cogman sends.
GO_FLAGS = (1 << 13) | (1 << 12) | (1 << 7)
PERSISTENT = 2

_frame_head = struct.Struct(">BHI")
_method_head = struct.Struct(">HHH")
_content_head = struct.Struct(">HHQH")


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"AMQP short string over 255 bytes: {value[:40]!r}...")
    return bytes((len(raw),)) + raw


def _headers_table(headers: Mapping[str, str]) -> bytes:
    """A field table of string values (type ``S``, a long string), as py-amqp writes ``str`` values."""
    parts = []
    for key, value in headers.items():
        raw = value.encode()
        parts.append(_shortstr(key) + b"S" + len(raw).to_bytes(4, "big") + raw)
    table = b"".join(parts)
    return len(table).to_bytes(4, "big") + table


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _frame_head.pack(kind, channel, len(payload)) + payload + FRAME_END


def publish_frames(
    channel: int,
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    message_id: str,
    content_type: str,
    content_encoding: str,
    frame_max: int,
    mandatory: bool = True,
) -> bytes:
    """One persistent message's frames; the body split into frames of at most ``frame_max`` bytes. An
    empty ``content_type`` leaves out both it and ``content_encoding`` (a Go-format message)."""
    method = (
        _method_head.pack(BASIC_CLASS, PUBLISH_METHOD, 0)
        + _shortstr(exchange)
        + _shortstr(routing_key)
        + (b"\x01" if mandatory else b"\x00")
    )
    properties = _headers_table(headers) + bytes((PERSISTENT,)) + _shortstr(message_id)
    if content_type:
        properties = _shortstr(content_type) + _shortstr(content_encoding) + properties
    flags = FLAGS if content_type else GO_FLAGS
    content = _content_head.pack(BASIC_CLASS, 0, len(body), flags) + properties
    parts = [_frame(FRAME_METHOD, channel, method), _frame(FRAME_HEADER, channel, content)]
    chunk = frame_max - FRAME_OVERHEAD
    for start in range(0, len(body), chunk):
        parts.append(_frame(FRAME_BODY, channel, body[start : start + chunk]))
    return b"".join(parts)


ACK_METHOD = 80
_ack = struct.Struct(">BHIHHQBB")
_ACK_PAYLOAD = 4 + 8 + 1


def ack_frames(channel: int, delivery_tags: Sequence[int]) -> bytes:
    """basic.ack of each tag (never ``multiple``: deliveries finish out of order), for one socket write."""
    return b"".join(
        _ack.pack(FRAME_METHOD, channel, _ACK_PAYLOAD, BASIC_CLASS, ACK_METHOD, tag, 0, 0xCE) for tag in delivery_tags
    )


def write_frames(connection: Any, frames: bytes) -> None:
    """Write packed frames on a py-amqp connection, counted as py-amqp counts its own writes (traffic
    stands in for heartbeats). The caller owns the connection's writes (one thread or a lock)."""
    connection.transport.write(frames)
    connection.bytes_sent += 1
