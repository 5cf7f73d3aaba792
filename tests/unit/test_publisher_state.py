"""The publisher's state machine and its outbox bookkeeping, without a broker."""

from __future__ import annotations

import logging

import pytest

from cogman.brokers.base import Receipt
from cogman.brokers.rabbitmq.outbox import Entry, Outbox
from cogman.brokers.rabbitmq.publisher_state import MOVES, Phase, PublisherState
from cogman.message import Message
from cogman.priority import Priority


def entry(index: int, receipt: Receipt, size: int = 0) -> Entry:
    message = Message(task_id=f"t{index}", name="n", original_task_id=f"t{index}", priority=Priority.HIGH)
    return Entry(message, "high_priority_queue_0", b"x" * size, receipt)


def test_every_phase_can_close_and_closed_is_final():
    assert all(Phase.CLOSING in MOVES[phase] for phase in Phase if phase not in (Phase.CLOSING, Phase.CLOSED))
    assert MOVES[Phase.CLOSING] == {Phase.CLOSED}
    assert MOVES[Phase.CLOSED] == frozenset()


def test_a_move_the_table_refuses_leaves_the_phase_and_is_logged(caplog: pytest.LogCaptureFixture):
    state = PublisherState()
    with caplog.at_level(logging.DEBUG, logger="cogman.rabbitmq"), state.lock:
        assert state.move(Phase.UP)
        assert state.move(Phase.DOWN, "ConnectionResetError: reset")
        down_since = state.since
        assert not state.move(Phase.DOWN, "again")  # still the first outage: its start is kept
        assert state.since == down_since and state.reason == "ConnectionResetError: reset"
        assert state.move(Phase.CLOSING)
        assert not state.move(Phase.DOWN)  # a connection lost while closing leaves it closing
        assert not state.closed.is_set()
        assert state.move(Phase.CLOSED)
    assert state.closed.is_set()
    assert "publisher up -> down (ConnectionResetError: reset)" in caplog.text
    assert "publisher stays closing (not down)" in caplog.text


def test_suspects_go_alone_and_first_and_nothing_passes_them():
    receipt = Receipt(4)
    entries = [entry(i, receipt) for i in range(4)]
    outbox = Outbox(limit=10)
    outbox.admit(entries)
    outbox.park(entries[2:])  # two ordinary sends parked behind...
    outbox.suspect(entries[:2])
    outbox.push_front(entries[:2])  # ...the two orphans of a refused message's channel

    assert outbox.isolating
    assert outbox.next_batch(500, 1 << 20, in_flight=True) == []  # a suspect waits for an empty channel
    assert outbox.next_batch(500, 1 << 20, in_flight=False) == [entries[0]]
    assert outbox.next_batch(500, 1 << 20, in_flight=False) == [entries[1]]
    assert outbox.next_batch(500, 1 << 20, in_flight=False) == []  # the last suspect is still unsettled
    assert outbox.release([entries[0], entries[1], entries[1]]) == [entries[0], entries[1]]  # settled once
    assert not outbox.isolating
    assert outbox.next_batch(500, 1 << 20, in_flight=True) == entries[2:]  # pipelined again


def test_batches_are_bounded_by_count_and_bytes_and_the_outbox_by_its_limit():
    receipt = Receipt(6)
    entries = [entry(i, receipt, size=400) for i in range(6)]
    outbox = Outbox(limit=5)
    assert outbox.has_room(6)  # nothing held: even a batch over the limit gets in, alone
    outbox.admit(entries[:5])
    outbox.park(entries[:5])
    assert not outbox.has_room(1) and not outbox.has_room(6)
    assert len(outbox.next_batch(2, 1 << 20, in_flight=False)) == 2
    assert len(outbox.next_batch(500, 700, in_flight=False)) == 2  # stops once about 700 bytes are taken
    assert outbox.task_ids() == [f"t{i}" for i in range(5)]
    assert [e.message.task_id for e in outbox.release_all()] == [f"t{i}" for i in range(5)]
    assert outbox.held == 0 and outbox.waiting == 0 and outbox.has_room(1)
