"""Reading what RabbitMQ delivers without trusting it: a message that cannot be decoded becomes a
``Delivery`` marked ``poison``, never an exception that breaks the connection.

py-amqp decodes a message's properties while it reads the content-header frame. A ``content_type``
that is not UTF-8 (or a header table it cannot parse) raises there, out of ``drain_events``; the frame
reader is then left expecting a header while the body frame arrives, so the only way on is a new
connection, and RabbitMQ delivers the same message again: a reconnect loop. ``use_lenient_framing``
swaps in a frame reader that salvages what it can of such properties and marks the message. The
consumer takes deliveries as raw py-amqp messages (never kombu's ``Message``, which decompresses a
body named by a ``compression`` header: 200 KiB can become 200 MiB).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from struct import unpack_from
from typing import Any

from amqp import spec
from amqp.basic_message import Message as RawMessage
from amqp.exceptions import UnexpectedFrame
from amqp.serialization import _read_item, dumps

from cogman.brokers.base import HEADER_DELIVERY_COUNT, Delivery
from cogman.priority import Priority

log = logging.getLogger("cogman.rabbitmq")

#: How often cogman gave a message back after an unexpected error (``Consumer.redeliver``).
HEADER_REDELIVERIES = "x-cogman-redeliveries"
#: kombu's header naming a compression; cogman never decompresses, such a message is dead-lettered.
HEADER_COMPRESSION = "compression"

_CONTENT_METHODS = frozenset([spec.Basic.Return, spec.Basic.Deliver, spec.Basic.GetOk])
_POISON = "cogman_poison"  # attribute set on a raw message whose properties could not be decoded
_SHORTSTR_MAX = 255


def use_lenient_framing(amqp_connection: Any) -> None:
    """Replace the frame reader of a connected py-amqp connection by ``lenient_frame_handler``.

    Safe right after the handshake: no content frame is half-read then."""
    amqp_connection.on_inbound_frame = lenient_frame_handler(amqp_connection, amqp_connection.on_inbound_method)


def lenient_frame_handler(connection: Any, callback: Callable[..., Any]) -> Callable[[Any], bool]:
    """py-amqp's ``method_framing.frame_handler``, except that properties it cannot decode are salvaged
    and the message is marked poison, so the frames that follow still parse."""
    expected_types: defaultdict[int, int] = defaultdict(lambda: 1)
    partial: dict[int, Any] = {}

    def on_frame(frame: tuple[int, int, Any]) -> bool:
        frame_type, channel, buf = frame
        connection.bytes_recv += 1
        if frame_type not in (expected_types[channel], 8):
            raise UnexpectedFrame(f"Received frame {frame_type} while expecting type: {expected_types[channel]}")
        if frame_type == 1:
            method_sig = unpack_from(">HH", buf, 0)
            if method_sig in _CONTENT_METHODS:
                partial[channel] = RawMessage(frame_method=method_sig, frame_args=buf)
                expected_types[channel] = 2
                return False
            callback(channel, method_sig, buf, None)
            return True
        if frame_type == 8:
            return False
        message = partial[channel]
        if frame_type == 2:
            _read_header(message, buf)
            if not message.ready:
                expected_types[channel] = 3
                return False
        else:
            message.inbound_body(buf)
            if not message.ready:
                return False
        expected_types[channel] = 1
        del partial[channel]
        callback(channel, message.frame_method, message.frame_args, message)
        return True

    return on_frame


def _read_header(message: Any, buf: Any) -> None:
    try:
        message.inbound_header(buf)
    except Exception as exc:
        _, message.body_size = unpack_from(">HxxQ", buf, 0)
        message.properties = salvage_properties(buf, 12)
        message.ready = not message.body_size
        setattr(message, _POISON, f"undecodable message properties ({type(exc).__name__}: {exc})")


def salvage_properties(buf: Any, offset: int) -> dict[str, Any]:
    """Basic properties read without failing: text that is not UTF-8 is kept with backslash escapes,
    and reading stops at the first field that cannot be parsed (what came before it is kept)."""
    properties: dict[str, Any] = {}
    try:
        (flags,) = unpack_from(">H", buf, offset)
        offset += 2
        for index, (name, kind) in enumerate(RawMessage.PROPERTIES):
            if not flags & (0x8000 >> index):
                continue
            if kind == "s":
                (length,) = unpack_from(">B", buf, offset)
                properties[name] = bytes(buf[offset + 1 : offset + 1 + length]).decode("utf-8", "backslashreplace")
                offset += 1 + length
            elif kind == "o":
                (properties[name],) = unpack_from(">B", buf, offset)
                offset += 1
            elif kind == "L":
                (properties[name],) = unpack_from(">Q", buf, offset)
                offset += 8
            else:  # "F": the header table
                table: dict[Any, Any] = {}
                properties[name] = table
                (length,) = unpack_from(">I", buf, offset)
                offset += 4
                end = offset + length
                while offset < end:
                    (key_length,) = unpack_from(">B", buf, offset)
                    key = bytes(buf[offset + 1 : offset + 1 + key_length])
                    table[_text(key)], offset = _read_item(buf, offset + 1 + key_length)
    except Exception:
        log.debug("stopped salvaging message properties at byte %d", offset, exc_info=True)
    return properties


def delivery_from_raw(message: Any, queue: str, priority: Priority, tag: Any, max_size: int) -> Delivery:
    """A Delivery from a raw py-amqp message, body untouched; ``poison`` says why it can never run."""
    properties = dict(message.properties or {})
    raw_headers = properties.pop("application_headers", None)
    raw_headers = raw_headers if isinstance(raw_headers, dict) else {}
    body = message.body
    body = body.encode() if isinstance(body, str) else bytes(body)
    poison: str | None = vars(message).get(_POISON)  # getattr would raise inside py-amqp's __getattr__
    foreign_keys = [key for key in raw_headers if not isinstance(key, str)]
    if poison is None and len(body) > max_size:
        poison = f"body of {len(body)} bytes is over max_message_size ({max_size} bytes)"
    if poison is None and foreign_keys:
        poison = f"header name {foreign_keys[0]!r} is not UTF-8"
    if poison is None and HEADER_COMPRESSION in raw_headers:
        poison = f"compressed message (compression={raw_headers[HEADER_COMPRESSION]!r}); cogman never decompresses"
    return Delivery(
        body=body,
        headers=sanitize_headers(raw_headers) if foreign_keys else raw_headers,
        queue=queue,
        priority=priority,
        tag=tag,
        redelivered=bool((message.delivery_info or {}).get("redelivered", False)),
        properties=properties,
        redeliveries=redeliveries(raw_headers),
        returns=count_header(raw_headers, HEADER_DELIVERY_COUNT),
        poison=poison,
    )


def delivery_from(message: Any, queue: str, priority: Priority, tag: Any) -> Delivery:
    """A cogman Delivery from a kombu message, body untouched (for reading the dead-letter queue)."""
    body = message.body
    if isinstance(body, str):
        body = body.encode(message.content_encoding or "utf-8")
    return Delivery(
        body=bytes(body),
        headers=dict(message.headers or {}),
        queue=queue,
        priority=priority,
        tag=tag,
        redelivered=bool(message.delivery_info.get("redelivered", False)),
        properties=dict(message.properties or {}),
    )


def redeliveries(headers: Mapping[Any, Any]) -> int:
    return count_header(headers, HEADER_REDELIVERIES)


def count_header(headers: Mapping[Any, Any], name: str) -> int:
    """A counting header's value; 0 when absent or not a positive integer (a foreign producer's)."""
    count = headers.get(name)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 0


def sanitize_headers(headers: Mapping[Any, Any]) -> dict[str, Any]:
    """Headers that py-amqp can write back: names as UTF-8 short strings, values it can encode (a value
    it cannot becomes its repr)."""
    clean: dict[str, Any] = {}
    for key, value in headers.items():
        name = shortstr(key)
        clean[name] = _value(value)
        try:
            dumps("F", [{name: clean[name]}])
        except Exception:
            clean[name] = repr(value)
    return clean


def _value(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value.encode("utf-8", "backslashreplace"))  # lone surrogates from 'surrogatepass'
    if isinstance(value, Mapping):
        return sanitize_headers(value)
    if isinstance(value, list | tuple):
        return [_value(item) for item in value]
    return value


def shortstr(value: Any) -> str:
    """``value`` as an AMQP short string: valid UTF-8, at most 255 bytes."""
    text = _text(value) if isinstance(value, bytes) else str(value)
    encoded = text.encode("utf-8", "backslashreplace")[:_SHORTSTR_MAX]
    return encoded.decode("utf-8", "ignore")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")
