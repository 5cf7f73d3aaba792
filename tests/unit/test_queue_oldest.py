"""How the age of the oldest waiting task is read from the oldest queued records (issue 23,
cogman/middleware/queue_stats.py): a delayed task waits from its ``eta``, each family is settled once a
record created after its best so far is reached, and an unsettled read says it is a lower bound."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from cogman import Priority, Status, TaskRecord
from cogman.middleware.queue_stats import oldest_waiting

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def queued(age: float, priority: Priority = Priority.HIGH, eta_in: float | None = None) -> TaskRecord:
    task_id = str(uuid.uuid4())
    created = NOW - timedelta(seconds=age)
    return TaskRecord(task_id=task_id, name="t", original_task_id=task_id, priority=priority,
                      payload={"args": [], "kwargs": {}}, status=Status.QUEUED, created_at=created,
                      updated_at=created, eta=None if eta_in is None else NOW + timedelta(seconds=eta_in))  # fmt: skip


def test_the_oldest_ready_record_of_each_family_counts():
    records = [queued(50, Priority.LOW), queued(40), queued(30), queued(20, Priority.LOW)]
    best, exact = oldest_waiting(records, NOW, complete=True)
    assert best == {Priority.LOW: NOW - timedelta(seconds=50), Priority.HIGH: NOW - timedelta(seconds=40)}
    assert exact


def test_a_delayed_task_waits_from_its_eta_and_not_before():
    later = queued(100, eta_in=3600)  # created first, due in an hour: not waiting to start
    due = queued(100, eta_in=-10)  # its eta passed 10 s ago: waiting since then
    plain = queued(30)
    best, _ = oldest_waiting([later, due, plain], NOW, complete=True)
    assert best == {Priority.HIGH: NOW - timedelta(seconds=30)}
    best, _ = oldest_waiting([later, due, queued(5)], NOW, complete=True)
    assert best == {Priority.HIGH: NOW - timedelta(seconds=10)}


def test_reading_stops_once_every_family_is_settled_and_says_when_it_could_not():
    settled = [queued(50), queued(45, Priority.LOW), queued(40)]
    assert oldest_waiting(settled, NOW, complete=False) == (
        {Priority.HIGH: NOW - timedelta(seconds=50), Priority.LOW: NOW - timedelta(seconds=45)},
        True,
    )
    only_delayed = [queued(50, eta_in=600), queued(40, eta_in=600)]
    assert oldest_waiting(only_delayed, NOW, complete=False) == ({}, False)  # more may wait beyond the read
    assert oldest_waiting(only_delayed, NOW, complete=True) == ({}, True)
