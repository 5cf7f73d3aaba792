"""Publisher confirms for one channel, pipelined: many publishes in flight, acks matched by delivery tag.

py-amqp's own ``confirm_publish`` mode waits after every message; this bookkeeping lets a batch go out in
one go and its confirms be collected while draining.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Confirms(Generic[T]):
    """Publisher confirms for one channel: delivery tag -> item, settled as acks and nacks arrive.

    The channel is put in confirm mode here. RabbitMQ numbers published messages 1, 2, 3... per channel
    and acks them in any grouping (``multiple``), so a batch is published in one go and its confirms
    are collected while draining, instead of one round trip per message. A message published with
    ``mandatory`` that no queue took comes back (basic.return) before its ack; it is reported as
    returned, not confirmed.
    """

    def __init__(self, channel: Any, on_settle: Callable[[T, str | None], None]) -> None:
        self.channel = channel
        self._on_settle = on_settle
        self._next_tag = 1
        self.outstanding: dict[int, T] = {}
        self._returned: set[str] = set()
        self._ids: dict[int, str] = {}
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)

    def sent(self, item: T, message_id: str) -> None:
        """Record one published message (call right after basic_publish, in publish order)."""
        self.outstanding[self._next_tag] = item
        self._ids[self._next_tag] = message_id
        self._next_tag += 1

    def _settle(self, delivery_tag: int, multiple: bool, failure: str | None) -> None:
        if multiple:
            tags = []
            for tag in self.outstanding:  # insertion order is tag order
                if tag > delivery_tag:
                    break
                tags.append(tag)
        else:
            tags = [delivery_tag]
        for tag in tags:
            item = self.outstanding.pop(tag, None)
            message_id = self._ids.pop(tag, "")
            if item is None:
                continue
            if failure is None and message_id in self._returned:
                self._returned.discard(message_id)
                self._on_settle(item, "no queue took the message (basic.return); the queue was deleted?")
            else:
                self._on_settle(item, failure)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, None)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, "the broker refused the message (basic.nack)")

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        message_id = (getattr(message, "properties", None) or {}).get("message_id")
        if message_id:
            self._returned.add(str(message_id))

    def take_outstanding(self) -> list[T]:
        """The unconfirmed items in publish order, forgotten here (their connection is gone)."""
        items = [self.outstanding[tag] for tag in sorted(self.outstanding)]
        self.outstanding.clear()
        self._ids.clear()
        return items

    @property
    def last_tag(self) -> int:
        """The delivery tag of the last message sent on this channel (0 before the first)."""
        return self._next_tag - 1

    def settled_through(self, tag: int) -> bool:
        """Every message sent up to ``tag`` is settled (tags are kept in order, the first is the lowest)."""
        return not self.outstanding or next(iter(self.outstanding)) > tag

    def restart(self) -> None:
        """Confirm mode again on a channel the broker closed and py-amqp reopened: tags start from 1.

        Call ``take_outstanding`` first: what was unconfirmed died with the old channel."""
        self._returned.clear()
        self._next_tag = 1
        self.channel.confirm_select()
