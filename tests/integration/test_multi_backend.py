"""Several backends at once: writes reach each, one-task reads come from the first, queries from the
first that can answer, and a failing secondary never fails a task."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from cogman import App, Config, Status
from cogman.backends import create_backend
from cogman.backends.base import TaskQuery
from cogman.backends.memory import MemoryBackend
from cogman.backends.mongo.backend import MongoBackend
from cogman.backends.multi import MultiBackend
from cogman.backends.redis.backend import RedisBackend
from cogman.errors import BackendUnavailable
from tests.integration.test_backend_contract import CONFIG, attempt_of, record


def mock_mongo() -> MongoBackend:
    return MongoBackend(f"mongomock://{uuid.uuid4().hex}", CONFIG)


class Broken:
    """A backend whose every call fails, like a secondary whose server is gone for good."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"broken backend: {name}")

        return fail


class NoQueries(MemoryBackend):
    def query(self, query: TaskQuery) -> Any:
        raise NotImplementedError("this store cannot list")

    def count_by_status(self, *args: Any) -> Any:
        raise BackendUnavailable("down")


def test_writes_reach_every_backend_and_reads_come_from_the_first():
    primary, secondary = MemoryBackend(), mock_mongo()
    multi = MultiBackend([primary, secondary])
    rec = record(retry=1)
    multi.create([rec])
    multi.transition_many([rec.task_id], Status.QUEUED)
    multi.transition(rec.task_id, Status.IN_PROGRESS)
    attempt = attempt_of(rec, 2)
    assert multi.spawn_retry(rec.task_id, attempt) == 0
    multi.transition(rec.task_id, Status.FAILED, fail_error="E: x", duration=0.5)
    for backend in (primary, secondary):
        stored = backend.get(rec.task_id)
        assert stored is not None and stored.status is Status.FAILED and stored.retry == 0
        assert stored.latest_attempt_id == attempt.task_id and backend.get(attempt.task_id) is not None
    secondary.transition(attempt.task_id, Status.SUCCESS)  # only the secondary knows: reads don't see it
    assert multi.get(attempt.task_id).status is Status.RETRY  # type: ignore[union-attr]
    assert multi.wait(attempt.task_id, 0.01).status is Status.RETRY  # type: ignore[union-attr]
    multi.close()


def test_a_failing_secondary_never_fails_the_task(caplog: pytest.LogCaptureFixture):
    primary = MemoryBackend()
    multi = MultiBackend([primary, Broken()])  # type: ignore[list-item]
    rec = record(retry=1)
    multi.create([rec])
    moved = multi.transition(rec.task_id, Status.IN_PROGRESS)
    assert moved is not None and moved.status is Status.IN_PROGRESS
    multi.transition_many([rec.task_id], Status.SUCCESS)
    assert multi.spawn_retry(rec.task_id, attempt_of(rec, 2)) == 0
    assert primary.get(rec.task_id).status is Status.SUCCESS  # type: ignore[union-attr]
    assert "secondary backend" in caplog.text and "the task goes on" in caplog.text
    multi.close()


def test_a_secondary_that_missed_writes_still_records_the_retry_attempt():
    primary, secondary = MemoryBackend(), MemoryBackend()
    multi = MultiBackend([primary, secondary])
    rec = record(retry=1)
    primary.create([rec])  # the secondary never heard of the original
    attempt = attempt_of(rec, 2)
    assert multi.spawn_retry(rec.task_id, attempt) == 0
    assert secondary.get(attempt.task_id) == attempt


def test_queries_come_from_the_first_backend_that_can_answer():
    first, second = NoQueries(), MemoryBackend()
    multi = MultiBackend([first, second])
    rec = record()
    multi.create([rec])
    assert [r.task_id for r in multi.query(TaskQuery()).records] == [rec.task_id]
    assert multi.count_by_status(rec.created_at, rec.created_at, 1)[0].total == 1
    with pytest.raises(NotImplementedError):
        MultiBackend([NoQueries()]).query(TaskQuery())


def test_a_list_of_urls_builds_a_multi_backend(redis_url: str):
    config = Config(broker_url="memory://", backend_url=[redis_url, f"mongomock://{uuid.uuid4().hex}"])
    backend = create_backend(config)
    assert isinstance(backend, MultiBackend)
    assert [type(b) for b in backend.backends] == [RedisBackend, MongoBackend]
    backend.close()


def test_a_worker_on_redis_and_mongo_records_everything_in_both(redis_url: str):
    redis.Redis.from_url(redis_url).flushdb()
    mongo_url = f"mongomock://{uuid.uuid4().hex}"
    app = App("multi", broker="memory://", backend=[redis_url, mongo_url])
    attempts: list[int] = []

    @app.task(name="multi.flaky", retry=1)
    def flaky(n: int) -> int:
        attempts.append(n)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return n * 10

    worker = app.start_background(concurrency=2)
    try:
        result = flaky.delay(4)
        assert result.get(timeout=30) == 40
        backend = app.backend
        assert isinstance(backend, MultiBackend)
        for store in backend.backends:
            page = store.query(TaskQuery(name="multi.flaky"))
            assert page.total == 2
            assert sorted(r.status.value for r in page.records) == ["failed", "success"]
    finally:
        worker.stop()
        app.close()


def test_an_unreachable_secondary_server_does_not_stop_the_worker(redis_url: str):
    redis.Redis.from_url(redis_url).flushdb()
    gone = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100&connectTimeoutMS=100"
    app = App("multi-down", broker="memory://", backend=[redis_url, gone])

    @app.task(name="multi.double")
    def double(n: int) -> int:
        return 2 * n

    worker = app.start_background(concurrency=2)
    try:
        assert [r.get(timeout=30) for r in [double.delay(i) for i in range(5)]] == [0, 2, 4, 6, 8]
    finally:
        worker.stop()
        app.close()
