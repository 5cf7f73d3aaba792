"""The Go-record primitives (``Backend.go_records()``, cogman/gowire/store.py) in the backend contract
style: each test runs against every backend of tests/integration/test_backend_contract.py (memory, Redis,
Redis sharded, mongomock, and MongoDB when COGMAN_TEST_MONGO_URI names one)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cogman.backends.base import Backend
from cogman.gowire.record import GoRecord
from cogman.status import Status
from tests.integration.test_backend_contract import KINDS, made_backend


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from made_backend(request, request.param)


def new(status: Status = Status.QUEUED, retry: int = 0) -> GoRecord:
    task_id = str(uuid.uuid4())
    return GoRecord.new(task_id, "gowire.echo", b"x", status=status, retry=retry)


def test_a_go_deliverys_start_counts_once_however_often_it_is_written(backend: Backend):
    """``start``'s token names the delivery: its calls made again (retries, replays of a parked write)
    count once, each new delivery once more; "" counts every call."""
    store = backend.go_records()
    record = new()
    store.create(record)
    first = store.start(record.task_id, "delivery-1")
    assert first is not None and first.record is not None
    assert (first.record.status, first.starts) == (Status.IN_PROGRESS, 1)
    assert [store.start(record.task_id, "delivery-1").starts for _ in range(2)] == [1, 1]
    assert [store.start(record.task_id, "delivery-2").starts for _ in range(2)] == [2, 2]
    assert [store.start(record.task_id, "").starts for _ in range(2)] == [3, 4]
    assert store.get(record.task_id).status is Status.IN_PROGRESS

    unknown = str(uuid.uuid4())  # a message sent with no record: its starts count all the same
    assert [(s.record, s.starts) for s in (store.start(unknown, "d") for _ in range(2))] == [(None, 1), (None, 1)]

    retry = new(Status.RETRY)  # Go's rank: a retry attempt stays retry
    store.create(retry)
    started = store.start(retry.task_id, "d")
    assert started is not None and started.record.status is Status.RETRY and started.starts == 1

    store.update(record.task_id, Status.SUCCESS, duration=0.5)
    final = store.start(record.task_id, "delivery-3")  # a redelivery of a finished task: not run, not counted
    assert final is not None and final.record.status is Status.SUCCESS and final.starts == 0


def test_go_retries_are_added_and_go_records_deleted_with_what_is_kept_beside_them(backend: Backend):
    store = backend.go_records()
    record = new(retry=1)
    store.create(record)
    assert store.add_retries(record.task_id, 2) == 3 and store.get(record.task_id).retry == 3
    assert store.add_retries(str(uuid.uuid4()), 1) is None
    assert [store.start(record.task_id, f"d{n}").starts for n in range(2)] == [1, 2]
    store.delete([record.task_id, str(uuid.uuid4())])  # unknown ids are ignored
    assert store.get(record.task_id) is None and backend.get(record.task_id) is None
    assert record.task_id not in {r.task_id for r in store.recent()}
    assert store.start(record.task_id, "d0").starts == 1  # its count went with it
