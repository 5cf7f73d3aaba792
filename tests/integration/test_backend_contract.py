"""The Backend contract, run against every implementation: memory (the reference), Redis (the real server
on 127.0.0.1, db 15; also its log cut into 4 shards, the layout of a Redis Cluster, and a real Redis
Cluster in tests/cluster) and MongoDB (mongomock; also a real server when COGMAN_TEST_MONGO_URI is set).

Whatever stores the records, the same calls must give the same answers. Also here: the write buffer
that carries the Redis and MongoDB backends through an outage.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from cogman import Config, Priority, Status, TaskRecord
from cogman.backends.base import Backend, TaskQuery
from cogman.backends.memory import MemoryBackend
from cogman.backends.mongo.backend import MongoBackend
from cogman.backends.outage import WriteBuffer
from cogman.backends.redis.backend import RedisBackend
from cogman.errors import BackendUnavailable
from cogman.record import utcnow
from cogman.status import allows

CONFIG = Config(broker_url="memory://", backend_url="memory://")
MONGO_URI = os.environ.get("COGMAN_TEST_MONGO_URI")
KINDS = ["memory", "redis", "redis-sharded", "mongomock", *(["mongodb"] if MONGO_URI else [])]


def real_mongo_uri() -> str:
    """The real server named by COGMAN_TEST_MONGO_URI; only ever one on this machine."""
    assert MONGO_URI is not None
    host = MONGO_URI.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    if host.split(":")[0] not in ("127.0.0.1", "localhost"):
        pytest.fail(f"COGMAN_TEST_MONGO_URI must point at 127.0.0.1, not {host}", pytrace=False)
    return MONGO_URI


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from made_backend(request, request.param)


def made_backend(request: pytest.FixtureRequest, kind: str) -> Iterator[Backend]:
    """A fresh backend of ``kind``; "redis-cluster" needs tests/cluster's ``redis_cluster_url`` fixture."""
    made: Backend
    if kind == "memory":
        made = MemoryBackend()
    elif kind in ("redis", "redis-sharded"):
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        made = RedisBackend(url, CONFIG.with_options(redis_shards=4 if kind == "redis-sharded" else None))
    elif kind == "redis-cluster":  # a prefix of its own instead of a flush: the cluster is shared
        url = request.getfixturevalue("redis_cluster_url")
        made = RedisBackend(url, CONFIG.with_options(redis_prefix=f"contract-{uuid.uuid4().hex[:8]}"))
    else:
        database = f"cogman_contract_{uuid.uuid4().hex[:8]}"
        url = f"mongomock://{database}" if kind == "mongomock" else real_mongo_uri()
        made = MongoBackend(url, CONFIG.with_options(mongo_database=database))
    yield made
    if isinstance(made, MongoBackend):
        made.client.drop_database(made.collection.database.name)
    made.close()


def record(
    name: str = "job",
    *,
    age: float = 0.0,
    status: Status = Status.INITIATED,
    retry: int = 0,
    primary_key: str | None = None,
    payload: dict | None = None,
    now: datetime | None = None,
) -> TaskRecord:
    """A first attempt created ``age`` seconds before ``now`` (recent: inside every backend's TTL window)."""
    task_id = str(uuid.uuid4())
    created = (now or utcnow()) - timedelta(seconds=age)
    return TaskRecord(
        task_id=task_id,
        name=name,
        original_task_id=task_id,
        priority=Priority.HIGH,
        payload=payload if payload is not None else {"args": [1, [], {"a": None}], "kwargs": {"k": 1.25}},
        status=status,
        primary_key=primary_key,
        retry=retry,
        created_at=created,
        updated_at=created,
    )


def attempt_of(original: TaskRecord, number: int) -> TaskRecord:
    return original.evolve(task_id=str(uuid.uuid4()), status=Status.RETRY, retry=0, attempt=number)


def move_to(backend: Backend, rec: TaskRecord, status: Status) -> None:
    """Walk a fresh record up to ``status`` through the allowed steps (a retry record starts there)."""
    if status is Status.RETRY:
        backend.create([attempt_of(rec, 2).evolve(task_id=rec.task_id)])
        return
    backend.create([rec])
    for step in (Status.QUEUED, Status.IN_PROGRESS, status):
        if allows(step, status) or step is status:
            backend.transition(rec.task_id, step)


# Records


def test_create_and_get_round_trip_every_field(backend: Backend):
    first = record(primary_key="img-42", retry=3)
    second = record(payload={"args": [], "kwargs": {}})
    backend.create([first, second])
    assert backend.get(first.task_id) == first
    assert backend.get(second.task_id) == second
    assert backend.get("no-such-task") is None


def test_planned_start_and_expiry_round_trip_exactly(backend: Backend):
    """``eta`` and ``expires`` (issue 11) are kept to the microsecond, on first and retry attempts, and
    survive status changes."""
    eta = datetime(2031, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
    expires = eta + timedelta(seconds=90, microseconds=7)
    delayed = record().evolve(eta=eta, expires=expires)
    backend.create([delayed])
    assert backend.get(delayed.task_id) == delayed
    backend.transition(delayed.task_id, Status.QUEUED)
    stored = backend.get(delayed.task_id)
    assert stored is not None and (stored.eta, stored.expires) == (eta, expires)

    original = record(retry=1)
    backend.create([original])
    retry = attempt_of(original, 2).evolve(eta=eta, expires=None)
    assert backend.spawn_retry(original.task_id, retry) == 0
    assert backend.get(retry.task_id) == retry
    assert backend.get(original.task_id).eta is None  # type: ignore[union-attr]


def test_transition_sets_fields_and_returns_the_record(backend: Backend):
    rec = record()
    backend.create([rec])
    moved = backend.transition(rec.task_id, Status.IN_PROGRESS)
    assert moved is not None and moved.status is Status.IN_PROGRESS and moved.updated_at >= rec.updated_at
    done = backend.transition(rec.task_id, Status.SUCCESS, result={"rows": [1, 2], "empty": []}, duration=0.25)
    assert done is not None and done.status is Status.SUCCESS
    assert done.result == {"rows": [1, 2], "empty": []} and done.duration == 0.25
    assert backend.get(rec.task_id) == done


def test_each_record_keeps_when_it_reached_each_status(backend: Backend):
    rec = record()
    backend.create([rec])
    backend.transition_many([rec.task_id], Status.QUEUED)
    backend.start(rec.task_id)
    backend.transition(rec.task_id, Status.SUCCESS, result=1)
    backend.transition(rec.task_id, Status.FAILED)  # refused: not in the history
    stored = backend.get(rec.task_id)
    assert stored is not None
    assert [status for status, _ in stored.history] == [
        Status.INITIATED,
        Status.QUEUED,
        Status.IN_PROGRESS,
        Status.SUCCESS,
    ]
    moments = [moment for _, moment in stored.history]
    assert moments == sorted(moments) and moments[0] == rec.created_at and moments[-1] == stored.updated_at


def test_a_failure_keeps_its_error_and_traceback(backend: Backend):
    rec = record()
    backend.create([rec])
    trace = 'Traceback (most recent call last):\n  File "shop.py", line 3\nValueError: boom "quoted" \u00e9'
    failed = backend.transition(rec.task_id, Status.FAILED, fail_error="ValueError: boom", traceback=trace)
    assert failed is not None and failed.traceback == trace and failed.fail_error == "ValueError: boom"
    assert backend.get(rec.task_id) == failed


def test_refused_transition_changes_nothing(backend: Backend):
    rec = record()
    backend.create([rec])
    backend.transition(rec.task_id, Status.FAILED, fail_error="ValueError: boom", duration=1.5)
    kept = backend.transition(rec.task_id, Status.SUCCESS, result=7, duration=9.0)
    assert kept is not None and kept.status is Status.FAILED
    assert kept.fail_error == "ValueError: boom" and kept.duration == 1.5 and kept.result is None


def test_transition_of_an_unknown_task_gives_none(backend: Backend):
    assert backend.transition(str(uuid.uuid4()), Status.IN_PROGRESS) is None


@pytest.mark.parametrize(("current", "new"), list(itertools.product(list(Status), list(Status))))
def test_every_move_follows_the_status_machine(backend: Backend, current: Status, new: Status):
    rec = record()
    move_to(backend, rec, current)
    assert backend.get(rec.task_id).status is current  # type: ignore[union-attr]
    after = backend.transition(rec.task_id, new)
    assert after is not None
    assert after.status is (new if allows(current, new) else current)


def test_a_repeated_create_never_resets_a_record_that_moved_on(backend: Backend):
    """A create replayed after an outage, or sent twice, must not undo the worker's progress."""
    rec = record(retry=2)
    backend.create([rec])
    backend.transition(rec.task_id, Status.SUCCESS, result=5, duration=0.5)
    backend.create([rec])
    stored = backend.get(rec.task_id)
    assert stored is not None and stored.status is Status.SUCCESS and stored.result == 5


def test_a_status_that_arrives_before_its_record_is_kept_and_applied(backend: Backend):
    """Another process's create may still be parked when the worker's status arrives."""
    rec = record()
    assert backend.transition(rec.task_id, Status.QUEUED) is None
    assert backend.transition(rec.task_id, Status.SUCCESS, result=[1], duration=0.1) is None
    assert backend.transition(rec.task_id, Status.IN_PROGRESS) is None  # lower: loses to the kept success
    backend.create([rec])
    stored = backend.get(rec.task_id)
    assert stored is not None and stored.status is Status.SUCCESS and stored.result == [1]


def test_create_runs_meanwhile_once_and_keeps_the_records_whatever_it_does(backend: Backend):
    """The client publishes in ``meanwhile``: it must run exactly once, and a publish that raised must
    not cost the record (re-enqueue republishes an unconfirmed record)."""
    rec, calls = record(), []
    assert backend.create([rec], meanwhile=lambda: calls.append(rec.task_id)) is True
    assert calls == [rec.task_id]
    stored = backend.get(rec.task_id)
    assert stored is not None and stored.status is Status.INITIATED

    other = record()

    def refused() -> None:
        raise RuntimeError("the publish failed")

    with pytest.raises(RuntimeError, match="the publish failed"):
        backend.create([other], meanwhile=refused)
    kept = backend.get(other.task_id)
    assert kept is not None and kept.status is Status.INITIATED


def test_a_task_started_and_finished_before_its_record_lands_keeps_its_outcome(backend: Backend):
    """The publish overlaps the create's round trip, so a worker may start a task, and even finish it,
    before the store ran the create: the create applies what the worker wrote."""
    rec = record(retry=2)
    assert backend.start(rec.task_id) is None
    assert backend.transition(rec.task_id, Status.SUCCESS, result={"n": 7}, duration=0.1) is None
    backend.create([rec])
    stored = backend.get(rec.task_id)
    assert stored is not None and stored.status is Status.SUCCESS and stored.result == {"n": 7}
    assert stored.retry == 2 and stored.name == rec.name


def test_start_moves_to_in_progress_and_reads_the_chain_from_the_store(backend: Backend):
    original = record(retry=3)
    backend.create([original])
    started = backend.start(original.task_id)
    assert started is not None and started.status is Status.IN_PROGRESS
    assert (started.original_task_id, started.attempt, started.retries_left) == (original.task_id, 1, 3)
    attempt = attempt_of(original, 2)
    assert backend.spawn_retry(original.task_id, attempt) == 2
    started = backend.start(attempt.task_id)
    assert started is not None and started.status is Status.IN_PROGRESS  # a retry attempt shows it runs
    assert (started.original_task_id, started.attempt, started.retries_left) == (original.task_id, 2, 2)
    backend.transition(attempt.task_id, Status.FAILED, fail_error="E: x")
    again = backend.start(attempt.task_id)
    assert again is not None and again.status is Status.FAILED  # a redelivery of a finished attempt
    assert backend.start("no-such-task") is None


def test_start_soon_answers_as_start_does_with_other_calls_in_between(backend: Backend):
    """A worker sends the start, runs the handler (which may send and read tasks), then reads the start's
    reply: the same answer as ``start``, counted once however often it is read."""
    original, finished = record(retry=3), record()
    backend.create([original])
    move_to(backend, finished, Status.SUCCESS)
    reply = backend.start_soon(original.task_id, "delivery-1")
    child = record()
    backend.create([child])
    assert backend.get(child.task_id) is not None and backend.start(child.task_id) is not None
    for _ in range(2):
        started = reply()
        assert started is not None and started.status is Status.IN_PROGRESS
        assert (started.original_task_id, started.attempt, started.retries_left, started.starts) == (
            original.task_id, 1, 3, 1,
        )  # fmt: skip
    stored = backend.get(original.task_id)
    assert stored is not None and stored.status is Status.IN_PROGRESS
    done = backend.start_soon(finished.task_id, "delivery-2")()
    assert done is not None and done.status is Status.SUCCESS
    assert backend.start_soon("no-such-task")() is None


def test_transition_many_moves_only_what_may_move(backend: Backend):
    fresh, running = record(), record()
    backend.create([fresh, running])
    backend.transition(running.task_id, Status.IN_PROGRESS)
    backend.transition_many([fresh.task_id, running.task_id, "unknown-id"], Status.QUEUED)
    assert backend.get(fresh.task_id).status is Status.QUEUED  # type: ignore[union-attr]
    assert backend.get(running.task_id).status is Status.IN_PROGRESS  # type: ignore[union-attr]


# Retry budget


def test_spawn_retry_spends_the_budget_down_to_zero(backend: Backend):
    original = record(retry=2)
    backend.create([original])
    first, second, third = (attempt_of(original, n) for n in (2, 3, 4))
    assert backend.spawn_retry(original.task_id, first) == 1
    assert backend.spawn_retry(original.task_id, second) == 0
    assert backend.spawn_retry(original.task_id, third) is None
    stored = backend.get(original.task_id)
    assert stored is not None and stored.retry == 0 and stored.latest_attempt_id == second.task_id
    assert backend.get(first.task_id) == first and backend.get(second.task_id) == second
    assert backend.get(third.task_id) is None


def test_spawn_retry_is_idempotent_per_attempt(backend: Backend):
    """A redelivered failure spawns the same attempt id again: the budget is spent once, the pointer
    never moves back, and the attempt's progress is kept."""
    original = record(retry=3)
    backend.create([original])
    second, third = attempt_of(original, 2), attempt_of(original, 3)
    assert backend.spawn_retry(original.task_id, second) == 2
    backend.transition(second.task_id, Status.FAILED, fail_error="E: again")
    assert backend.spawn_retry(original.task_id, third) == 1
    assert backend.spawn_retry(original.task_id, second) == 1  # again: nothing changes
    stored = backend.get(original.task_id)
    assert stored is not None and stored.retry == 1 and stored.latest_attempt_id == third.task_id
    assert backend.get(second.task_id).status is Status.FAILED  # type: ignore[union-attr]


def test_spawn_retry_without_budget_or_original(backend: Backend):
    original = record(retry=0)
    backend.create([original])
    assert backend.spawn_retry(original.task_id, attempt_of(original, 2)) is None
    assert backend.spawn_retry("no-such-task", attempt_of(original, 2)) is None


# Re-enqueue leases


def test_claims_take_each_stale_unconfirmed_record_once(backend: Backend):
    fresh, other, confirmed = record(), record(), record()
    retry_attempt = attempt_of(fresh, 2)
    backend.create([fresh, other, confirmed, retry_attempt])
    backend.transition(confirmed.task_id, Status.QUEUED)
    ids = [fresh.task_id, other.task_id, confirmed.task_id, retry_attempt.task_id, "no-such-task"]
    assert sorted(backend.claim_stale(ids, 60)) == sorted([fresh.task_id, other.task_id, retry_attempt.task_id])
    assert backend.claim_stale(ids, 60) == []  # leased: a second sweeper takes nothing


def test_an_expired_lease_can_be_claimed_again_and_a_renewed_one_cannot(backend: Backend):
    rec, held = record(), record()
    backend.create([rec, held])
    assert sorted(backend.claim_stale([rec.task_id, held.task_id], 0.001)) == sorted([rec.task_id, held.task_id])
    time.sleep(0.01)  # the lease is a wall-clock time: let it pass
    backend.renew_leases([held.task_id], 60)  # the client that holds it in its outbox keeps it
    assert backend.claim_stale([rec.task_id, held.task_id], 60) == [rec.task_id]


def test_durable_fires_once_the_writes_are_in_the_store(backend: Backend):
    rec = record()
    backend.create([rec])
    backend.transition(rec.task_id, Status.SUCCESS, result=1)
    fired: list[str | None] = []
    backend.durable(fired.append)
    assert fired == [None]  # nothing parked: at once


# Waiting


def test_wait_returns_a_finished_record_at_once_and_times_out_on_an_unfinished_one(backend: Backend):
    done, pending = record(), record()
    backend.create([done, pending])
    backend.transition(done.task_id, Status.SUCCESS, result=1)
    assert backend.wait(done.task_id, 30).status is Status.SUCCESS  # type: ignore[union-attr]
    assert backend.wait(pending.task_id, 0.05).status is Status.INITIATED  # type: ignore[union-attr]


def test_wait_wakes_when_another_thread_finishes_the_task(backend: Backend):
    rec = record()
    backend.create([rec])
    seen: list[TaskRecord | None] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        seen.append(backend.wait(rec.task_id, 60))

    thread = threading.Thread(target=waiter)
    thread.start()
    started.wait(10)
    backend.transition(rec.task_id, Status.IN_PROGRESS)
    backend.transition(rec.task_id, Status.SUCCESS, result="ok")
    thread.join(30)
    assert not thread.is_alive()
    assert seen[0] is not None and seen[0].status is Status.SUCCESS and seen[0].result == "ok"


# Queries


@pytest.fixture
def population(backend: Backend) -> list[TaskRecord]:
    """12 records, one a second, newest first: names a/b, two with a primary key, assorted statuses."""
    now = utcnow()
    records = [
        record("a" if i % 2 else "b", age=i + 1, primary_key="pk-1" if i in (3, 7) else None, now=now)
        for i in range(12)
    ]
    backend.create(records)
    for rec in records[:4]:
        backend.transition(rec.task_id, Status.IN_PROGRESS)
    backend.transition(records[0].task_id, Status.SUCCESS, result=0)
    backend.transition(records[5].task_id, Status.FAILED, fail_error="E: x")
    return [backend.get(r.task_id) for r in records]  # type: ignore[misc]


def ids(records: list[TaskRecord]) -> list[str]:
    return [r.task_id for r in records]


def test_query_lists_newest_first_with_total_and_paging(backend: Backend, population: list[TaskRecord]):
    page = backend.query(TaskQuery(limit=5))
    assert page.total == 12 and ids(page.records) == ids(population[:5])
    page = backend.query(TaskQuery(skip=10, limit=5))
    assert page.total == 12 and ids(page.records) == ids(population[10:])
    assert backend.query(TaskQuery(limit=0)).total == 12
    assert backend.query(TaskQuery(skip=50)).records == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (TaskQuery(status=Status.IN_PROGRESS), [1, 2, 3]),
        (TaskQuery(status=Status.INITIATED, limit=3), [4, 6, 7]),
        (TaskQuery(name="a"), [1, 3, 5, 7, 9, 11]),
        (TaskQuery(name="a", status=Status.IN_PROGRESS), [1, 3]),
        (TaskQuery(primary_key="pk-1"), [3, 7]),
        (TaskQuery(primary_key="pk-1", name="a", status=Status.INITIATED), [7]),
        (TaskQuery(status=Status.RETRY), []),
        (TaskQuery(name="nobody"), []),
    ],
)
def test_query_filters(backend: Backend, population: list[TaskRecord], query: TaskQuery, expected: list[int]):
    page = backend.query(query)
    everything = backend.query(
        TaskQuery(status=query.status, name=query.name, primary_key=query.primary_key, limit=100)
    )
    assert ids(page.records) == ids([population[i] for i in expected])
    assert page.total == len(everything.records)


def test_query_by_created_range_includes_both_ends(backend: Backend, population: list[TaskRecord]):
    after, before = population[8].created_at, population[2].created_at
    page = backend.query(TaskQuery(created_after=after, created_before=before))
    assert ids(page.records) == ids(population[2:9]) and page.total == 7
    page = backend.query(TaskQuery(created_after=after, created_before=before, status=Status.INITIATED, skip=1))
    assert ids(page.records) == ids([population[i] for i in (6, 7, 8)]) and page.total == 4
    assert backend.query(TaskQuery(created_after=before, created_before=after)).total == 0


def test_count_by_status_in_buckets(backend: Backend, population: list[TaskRecord]):
    start = population[-1].created_at
    end = population[0].created_at
    buckets = backend.count_by_status(start, end, 4.0)
    expected = MemoryBackend()
    expected.create(population)
    assert buckets == expected.count_by_status(start, end, 4.0)
    assert [b.total for b in buckets] == [4, 4, 4]
    assert buckets[-1].counts == {Status.SUCCESS: 1, Status.IN_PROGRESS: 3}
    with pytest.raises(ValueError, match="bucket_seconds"):
        backend.count_by_status(start, end, 0)


def test_count_by_status_leaves_out_empty_buckets(backend: Backend):
    now = utcnow()
    old, new = record(age=100), record(age=1)
    backend.create([old, new])
    buckets = backend.count_by_status(now - timedelta(seconds=200), now, 10)
    assert [b.total for b in buckets] == [1, 1]
    assert all(b.counts == {Status.INITIATED: 1} for b in buckets)


# The write buffer (outage behaviour shared by Redis and MongoDB)


class Flaky:
    """A store that is down until ``up`` is set; records what reached it, in order."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.applied: list[str] = []

    def op(self, name: str, fail: Exception | None = None):
        def run() -> str:
            if not self.up.is_set():
                raise ConnectionError("store down")
            if fail is not None:
                raise fail
            self.applied.append(name)
            return name

        return run


def transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


def test_write_buffer_parks_writes_in_order_and_replays_them():
    store = Flaky()
    buffer = WriteBuffer("test store", transient, retry_seconds=0.05)
    try:
        assert buffer.write(store.op("create"), "create") is None
        assert buffer.write(store.op("move"), "move") is None  # queued behind, without trying the store
        assert buffer.pending == 2 and store.applied == []
        store.up.set()
        assert buffer.flush(10)
        assert store.applied == ["create", "move"]
        assert buffer.write(store.op("direct"), "direct") == "direct"
    finally:
        buffer.close()


def test_a_durability_barrier_fires_only_after_the_writes_before_it():
    """The worker acks through the barrier: never while the outcome lives only in this process."""
    store = Flaky()
    buffer = WriteBuffer("test store", transient, retry_seconds=0.05)
    fired: list[tuple[str | None, list[str]]] = []
    try:
        buffer.write(store.op("success of t1"), "success of t1")
        buffer.durable(lambda failure: fired.append((failure, list(store.applied))))
        buffer.write(store.op("success of t2"), "success of t2")
        assert fired == []
        store.up.set()
        assert buffer.flush(10)
        assert fired == [(None, ["success of t1"])]
    finally:
        buffer.close()


def test_a_barrier_reports_a_write_that_failed_for_good():
    store = Flaky()
    buffer = WriteBuffer("test store", transient, retry_seconds=0.05)
    fired: list[str | None] = []
    try:
        buffer.write(store.op("bad", fail=ValueError("corrupt record")), "move t1")
        buffer.durable(fired.append)
        store.up.set()
        assert buffer.flush(10)
        assert len(fired) == 1 and fired[0] is not None and "corrupt record" in fired[0]
    finally:
        buffer.close()


def test_every_barrier_behind_a_failed_write_hears_of_it_whoever_made_the_write():
    """Threads A and B park a write each, then B's barrier is queued before A's. A's write fails for
    good: A's barrier must say so (the old buffer handed the failure to B's barrier only, and A's message
    was acked with its outcome unrecorded). B hears of it too: a needless redelivery, never a loss."""
    store = Flaky()
    buffer = WriteBuffer("test store", transient, retry_seconds=0.05)
    fired: dict[str, str | None] = {}
    try:
        buffer.write(store.op("a", fail=ValueError("corrupt record")), "move a")
        buffer.write(store.op("b"), "move b")
        buffer.durable(lambda failure: fired.__setitem__("b", failure))
        buffer.durable(lambda failure: fired.__setitem__("a", failure))
        store.up.set()
        assert buffer.flush(10)
        assert "corrupt record" in str(fired["a"]) and "corrupt record" in str(fired["b"])
        assert store.applied == ["b"]
    finally:
        buffer.close()


def test_a_barrier_just_after_the_failed_write_was_replayed_still_hears_of_it():
    """The owner's barrier can arrive after the replay thread already failed its write and emptied the
    queue; it is told, while a barrier of a later outage is not."""
    store = Flaky()
    buffer = WriteBuffer("test store", transient, retry_seconds=0.05)
    fired: list[str | None] = []
    try:
        buffer.write(store.op("bad", fail=ValueError("corrupt record")), "move t1")
        store.up.set()
        assert buffer.flush(10)
        buffer.durable(fired.append)
        assert len(fired) == 1 and "corrupt record" in str(fired[0])
        buffer._failure_until = 0.0  # the memory of that failure has run out
        store.up.clear()
        buffer.write(store.op("later"), "move t2")
        buffer.durable(fired.append)
        store.up.set()
        assert buffer.flush(10)
        assert fired[1] is None and store.applied == ["later"]
    finally:
        buffer.close()


def test_write_buffer_reads_raise_backend_unavailable():
    store = Flaky()
    buffer = WriteBuffer("test store", transient, retry_seconds=0.05)
    with pytest.raises(BackendUnavailable, match="test store unreachable while trying to read"):
        buffer.call(store.op("read"), "read")
    buffer.close()


def test_a_full_write_buffer_refuses_loudly_and_drops_nothing():
    store = Flaky()
    buffer = WriteBuffer("test store", transient, retry_seconds=0.01, max_pending=2)
    try:
        for name in ("one", "two"):
            buffer.write(store.op(name), name)
        with pytest.raises(BackendUnavailable, match="2 writes already buffered; cannot three"):
            buffer.write(store.op("three"), "three")
        store.up.set()
        assert buffer.flush(10) and store.applied == ["one", "two"]
    finally:
        buffer.close(timeout=0.1)


# Workflows and periodic tasks (issue 11): the claim of a record and the chord's set


def test_create_new_says_which_call_created_the_record(backend: Backend):
    first = record(payload={"args": [1], "kwargs": {}})
    assert backend.create_new(first) is True
    assert backend.create_new(first.evolve(payload={"args": [2], "kwargs": {}})) is False
    stored = backend.get(first.task_id)
    assert stored is not None and stored.args == [1]
    backend.transition(first.task_id, Status.SUCCESS, result=1)
    assert backend.create_new(first) is False
    assert backend.get(first.task_id).status is Status.SUCCESS  # type: ignore[union-attr]


def test_create_new_of_a_final_record_wakes_its_waiters(backend: Backend):
    failed = record(status=Status.FAILED).evolve(fail_error="not run: step 1 (a) failed: E")
    assert backend.create_new(failed) is True
    assert backend.wait(failed.task_id, 5).fail_error == "not run: step 1 (a) failed: E"  # type: ignore[union-attr]


def test_of_many_concurrent_create_new_exactly_one_wins(backend: Backend):
    contested = record()
    outcomes: list[bool] = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        outcomes.append(backend.create_new(contested))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 7 + [True]


def test_join_chord_completes_once_every_member_is_in_and_keeps_first_outcomes(backend: Backend):
    chord_id = str(uuid.uuid4())
    assert backend.join_chord(chord_id, 1, 3, '{"ok": 1}') is None
    assert backend.join_chord(chord_id, 1, 3, '{"ok": "again"}') is None  # a redelivered member
    assert backend.join_chord(chord_id, 0, 3, '{"ok": 0}') is None
    assert backend.join_chord(chord_id, 2, 3, '{"failed": "E"}') == ['{"ok": 0}', '{"ok": 1}', '{"failed": "E"}']
    assert backend.join_chord(chord_id, 2, 3, '{"ok": 2}') == ['{"ok": 0}', '{"ok": 1}', '{"failed": "E"}']
    assert backend.join_chord(str(uuid.uuid4()), 0, 1, "[]") == ["[]"]
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        backend.join_chord(chord_id, 3, 3, "{}")


def test_members_joining_at_the_same_time_see_the_chord_complete_at_least_once(backend: Backend):
    size = 8

    def join(chord_id: str, index: int, start: threading.Barrier, seen: list[list[str] | None]) -> None:
        start.wait()
        seen.append(backend.join_chord(chord_id, index, size, str(index)))

    for _ in range(5):
        chord_id, start, seen = str(uuid.uuid4()), threading.Barrier(size), []
        threads = [threading.Thread(target=join, args=(chord_id, i, start, seen)) for i in range(size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        complete = [outcomes for outcomes in seen if outcomes is not None]
        assert complete and all(outcomes == [str(i) for i in range(size)] for outcomes in complete)


def test_a_multi_backend_claims_on_the_primary_and_mirrors_the_record():
    from cogman.backends.multi import MultiBackend

    primary, secondary = MemoryBackend(), MemoryBackend()
    both = MultiBackend([primary, secondary])
    claimed = record()
    assert both.create_new(claimed) is True and both.create_new(claimed) is False
    assert secondary.get(claimed.task_id) is not None
    assert both.join_chord("c", 0, 1, "1") == ["1"] and secondary.join_chord("c", 0, 2, "x") is None
