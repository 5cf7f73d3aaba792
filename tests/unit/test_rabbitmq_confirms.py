"""The RabbitMQ broker's bookkeeping without a broker: confirm matching, outbox order, report delivery."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from cogman.brokers.base import Receipt
from cogman.brokers.rabbitmq.connection import Confirms
from cogman.brokers.rabbitmq.outbox import Entry, Outbox, deliver, settle
from cogman.brokers.rabbitmq.topology import queue_arguments
from cogman.message import Message
from cogman.priority import Priority


class FakeChannel:
    def __init__(self) -> None:
        self.events: dict[str, set[Any]] = {"basic_ack": set(), "basic_nack": set(), "basic_return": set()}
        self.selected = False

    def confirm_select(self) -> None:
        self.selected = True

    def fire(self, event: str, *args: Any) -> None:
        for callback in self.events[event]:
            callback(*args)


def test_confirms_match_single_multiple_nack_and_return():
    channel = FakeChannel()
    settled: list[tuple[str, str | None]] = []
    confirms: Confirms[str] = Confirms(channel, lambda item, failure: settled.append((item, failure)))
    for name in "abcdef":
        confirms.sent(name, message_id=f"id-{name}")

    channel.fire("basic_ack", 2, True)  # a and b at once
    channel.fire("basic_nack", 3, False)  # c refused
    channel.fire("basic_return", Exception("NO_ROUTE"), "", "q", SimpleNamespace(properties={"message_id": "id-d"}))
    channel.fire("basic_ack", 4, False)  # d: acked, but it was returned first
    channel.fire("basic_ack", 4, False)  # a duplicate ack is ignored

    assert channel.selected
    assert [item for item, failure in settled if failure is None] == ["a", "b"]
    assert [item for item, failure in settled if failure is not None] == ["c", "d"]
    assert "nack" in dict(settled)["c"] and "basic.return" in dict(settled)["d"]
    assert confirms.take_outstanding() == ["e", "f"]  # in publish order
    assert confirms.outstanding == {}


def message(index: int) -> Message:
    return Message(task_id=f"t{index}", name="n", original_task_id=f"t{index}", priority=Priority.HIGH)


def test_outbox_puts_unconfirmed_back_in_front_in_order():
    receipt = Receipt(5)
    entries = [Entry(message(i), "high_priority_queue_0", b"", receipt) for i in range(5)]
    outbox = Outbox(limit=100)
    outbox.admit(entries)
    outbox.park(entries[3:])
    outbox.push_front(entries[:3])

    assert [e.message.task_id for e in outbox.next_batch(2, 1 << 20, in_flight=False)] == ["t0", "t1"]
    assert [e.message.task_id for e in outbox.take_all()] == ["t2", "t3", "t4"]
    assert outbox.waiting == 0 and outbox.held == 5  # held until settled, wherever they are


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], str | None]] = []

    def confirmed(self, messages: Sequence[Message]) -> None:
        self.calls.append(("confirmed", [m.task_id for m in messages], None))

    def abandoned(self, messages: Sequence[Message], reason: str) -> None:
        self.calls.append(("abandoned", [m.task_id for m in messages], reason))
        raise RuntimeError("a broken listener must not stop the senders from waking")


def test_deliver_groups_reports_and_the_receipt_settles_even_if_the_listener_fails():
    receipt = Receipt(3)
    entries = [Entry(message(i), "q", b"", receipt) for i in range(3)]
    listener = Listener()
    reports: list[tuple[Entry, str | None]] = [(entries[0], None), (entries[1], "gone"), (entries[2], None)]

    deliver(listener, reports)
    settle(reports)

    assert listener.calls == [("confirmed", ["t0", "t2"], None), ("abandoned", ["t1"], "gone")]
    assert receipt.done and receipt.failure == "gone"


def test_queue_arguments_are_the_seed_systems():
    assert queue_arguments(Priority.HIGH, "classic") == {"x-queue-mode": "default"}
    assert queue_arguments(Priority.LOW, "classic") == {"x-queue-mode": "lazy"}
    assert queue_arguments(None, "classic") == {}
    assert queue_arguments(None, "quorum") == {"x-queue-type": "quorum"}
    assert queue_arguments(Priority.LOW, "quorum", 3)["x-delivery-limit"] == 3
