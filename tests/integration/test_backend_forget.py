"""Forgetting records (``Backend.delete``, ``AsyncResult.forget``), run against every backend of the
contract (memory, Redis on 127.0.0.1, mongomock) and through MultiBackend: nothing of a forgotten record
may be left to find, by id, by query or by a later create."""

from __future__ import annotations

import uuid

import pytest
import redis

from cogman import App, TaskContext, TaskFailed, TaskNotFound
from cogman.backends.base import Backend, TaskQuery
from cogman.backends.memory import MemoryBackend
from cogman.backends.multi import MultiBackend
from cogman.backends.redis.backend import RedisBackend
from cogman.result import AsyncResult
from cogman.sending.client import retry_task_id
from cogman.status import Status
from tests.integration import test_backend_contract as contract

backend = contract.backend  # the parametrised fixture: memory, redis, mongomock (and mongodb when set)
record = contract.record


def visible(backend: Backend, **filters: object) -> set[str]:
    return {r.task_id for r in backend.query(TaskQuery(limit=100, **filters)).records}  # type: ignore[arg-type]


def test_delete_removes_the_records_from_reads_and_every_index(backend: Backend):
    gone, done, kept = record(primary_key="pk-1"), record(primary_key="pk-1"), record(primary_key="pk-1")
    backend.create([gone, done, kept])
    backend.transition(done.task_id, Status.SUCCESS, result=1)  # final: Redis holds a wake-up token
    backend.delete([gone.task_id, done.task_id, "never-existed"])
    assert backend.get(gone.task_id) is None and backend.get(done.task_id) is None
    assert backend.get(kept.task_id) == kept
    assert visible(backend) == {kept.task_id}
    assert visible(backend, name="job") == {kept.task_id}
    assert visible(backend, primary_key="pk-1") == {kept.task_id}
    assert visible(backend, status=Status.SUCCESS) == set()
    assert backend.query(TaskQuery(status=Status.INITIATED)).total == 1
    backend.delete([])


def test_delete_drops_a_status_that_arrived_before_its_record(backend: Backend):
    """A forgotten id whose worker status was parked early must not resurrect through a later create."""
    rec = record()
    assert backend.transition(rec.task_id, Status.SUCCESS, result=2) is None  # kept early
    backend.delete([rec.task_id])
    backend.create([rec])
    stored = backend.get(rec.task_id)
    assert stored is not None and stored.status is Status.INITIATED and stored.result is None


def test_redis_delete_leaves_no_key_or_index_entry(redis_url: str):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = RedisBackend(redis_url, contract.CONFIG)
    try:
        rec, kept = record(primary_key="pk-9"), record(primary_key="pk-9")
        store.create([rec, kept])
        store.transition(rec.task_id, Status.FAILED, fail_error="E: x")
        store.transition(str(uuid.uuid4()), Status.QUEUED)  # an unrelated early stub stays
        store.delete([rec.task_id])
        keys = [key.decode() for key in client.keys("*")]
        assert not [key for key in keys if rec.task_id in key]
        members = {key: {m.decode() for m in client.zrange(key, 0, -1)} for key in keys if client.type(key) == b"zset"}
        assert members and all(rec.task_id not in ids for ids in members.values())
        assert any(kept.task_id in ids for ids in members.values())
        assert sum(1 for key in keys if ":early:" in key) == 1
    finally:
        store.close()


def test_forget_deletes_the_whole_chain(backend: Backend):
    """The original, the automatic retries (ids derived from the failed attempt) and a manual retry."""
    original = record(retry=3)
    backend.create([original])
    automatic = contract.attempt_of(original, 2).evolve(task_id=retry_task_id(original.task_id))
    assert backend.spawn_retry(original.task_id, automatic) == 2
    manual = contract.attempt_of(original, 3)
    assert backend.spawn_retry(original.task_id, manual) == 1
    unrelated = record()
    backend.create([unrelated])
    AsyncResult(backend, automatic.task_id).forget()  # from any attempt of the chain
    for attempt in (original, automatic, manual):
        assert backend.get(attempt.task_id) is None
    assert backend.get(unrelated.task_id) == unrelated
    with pytest.raises(TaskNotFound):
        AsyncResult(backend, original.task_id).status  # noqa: B018
    AsyncResult(backend, original.task_id).forget()  # again: nothing to do, no error


def test_multi_backend_deletes_from_every_backend():
    primary, secondary = MemoryBackend(), MemoryBackend()
    both = MultiBackend([primary, secondary])
    rec = record()
    both.create([rec])
    assert secondary.get(rec.task_id) == rec
    both.delete([rec.task_id])
    assert primary.get(rec.task_id) is None and secondary.get(rec.task_id) is None


def test_forget_after_a_worker_retried_a_task(app: App):
    @app.task(name="forget.flaky", retry=2, bind=True)
    def flaky(ctx: TaskContext) -> None:
        raise OSError(f"attempt {ctx.attempt}")

    worker = app.start_background(concurrency=1)
    try:
        result = flaky.delay()
        with pytest.raises(TaskFailed):
            result.get(timeout=10)
    finally:
        worker.stop()
    chain = [result.id, retry_task_id(result.id), retry_task_id(retry_task_id(result.id))]
    assert [app.backend.get(task_id) is not None for task_id in chain] == [True, True, True]
    result.forget()
    assert [app.backend.get(task_id) for task_id in chain] == [None, None, None]
    assert app.backend.query(TaskQuery()).total == 0
