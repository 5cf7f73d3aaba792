"""The Redis task log cut into shards (``redis_shards``, the layout a Redis Cluster needs) answers every
query as the unsharded log does, given the same writes; its keys carry one hash tag per shard, spread over
the slots. tests/cluster/test_redis_cluster_contract.py runs the comparison against a real Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cogman import Config
from cogman.backends.redis import queries as redis_queries
from cogman.backends.redis.backend import RedisBackend
from cogman.errors import BackendUnavailable
from cogman.record import utcnow
from tests.integration.redis_helpers import drop_prefix
from tests.integration.test_backend_contract import attempt_of, record
from tests.integration.test_redis_queries_scale import populate, queries


class Both:
    """Stands for a backend in ``populate``: every write goes to each backend, in the same order."""

    def __init__(self, *backends: RedisBackend) -> None:
        self.backends = backends
        self.client = Direct(backends)

    def key(self, task_id: str) -> str:
        return task_id  # the direct writes find each backend's own key

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            return [getattr(backend, name)(*args, **kwargs) for backend in self.backends][-1]

        return call


class Direct:
    """The direct Redis writes of ``populate`` (an edited budget, an evicted hash), on each backend."""

    def __init__(self, backends: tuple[RedisBackend, ...]) -> None:
        self.backends = backends

    def hset(self, task_id: str, field: str, value: str) -> None:
        for backend in self.backends:
            backend.client.hset(backend.key(task_id), field, value)

    def delete(self, task_id: str) -> None:
        for backend in self.backends:
            backend.client.delete(backend.key(task_id))


@pytest.fixture
def unsharded(redis_url: str) -> Iterator[RedisBackend]:
    redis.Redis.from_url(redis_url).flushdb()
    made = RedisBackend(redis_url, Config(broker_url="memory://", backend_url=redis_url, redis_ttl=60))
    yield made
    made.close()


@pytest.fixture
def sharded(redis_url: str) -> Iterator[RedisBackend]:
    config = Config(broker_url="memory://", backend_url=redis_url, redis_ttl=60, redis_prefix="sh", redis_shards=5)
    made = RedisBackend(redis_url, config)
    yield made
    made.close()
    drop_prefix(redis_url, "sh")


def test_every_query_of_a_sharded_log_gives_the_unsharded_answers(
    unsharded: RedisBackend, sharded: RedisBackend, monkeypatch
):
    """Every filter combination, window and page: the same records in the same order, the same totals;
    and the same counts by status."""
    monkeypatch.setattr(redis_queries, "SCAN_BUDGET", 7)  # many calls per combined query
    monkeypatch.setattr(redis_queries, "READ_CHUNK", 3)  # and pages read over several calls
    assert sharded.shards.count > 1 and unsharded.shards.count == 1
    records = populate(Both(unsharded, sharded), utcnow())  # type: ignore[arg-type]
    nonempty = 0
    for query in queries(records):
        want, got = unsharded.query(query), sharded.query(query)
        assert ([r.task_id for r in got.records], got.total) == ([r.task_id for r in want.records], want.total), query
        nonempty += bool(want.records)
    assert nonempty > 200
    start, end = min(r.created_at for r in records), utcnow()
    for seconds in (0.5, 7.0, 3600.0):
        assert sharded.count_by_status(start, end, seconds) == unsharded.count_by_status(start, end, seconds)
    base = sharded.keys.prefix.split(":{", 1)[0]  # the redis_prefix, without shard 0's tag
    used = {key.decode().split("}", 1)[0] for key in sharded.client.scan_iter(f"{base}:*", count=1000)}
    assert len(used) == sharded.shards.count  # every shard got some of the records


def test_the_shards_keys_carry_tags_spread_over_the_slots(sharded: RedisBackend):
    from redis.crc import key_slot

    slots = [key_slot(layout.task("x").encode()) for layout in sharded.shards.layouts]
    assert [slot * 5 // 16384 for slot in slots] == [0, 1, 2, 3, 4]  # one shard in each fifth of the slots
    assert all(
        key_slot(layout.route[0].encode()) == slot for layout, slot in zip(sharded.shards.layouts, slots, strict=True)
    )


def test_a_retry_whose_record_was_not_written_in_its_shard_is_written_by_the_redelivery(sharded: RedisBackend):
    """The attempt lives in another shard than its original: the budget is spent in one step and the
    record created in another. Redis lost between the two, the spawn raises (the failure is not acked);
    its redelivery spends nothing more and writes the record."""
    original = record(retry=2)
    sharded.create([original])
    attempt = attempt_of(original, 2)
    while sharded.shards.of(attempt.task_id) is sharded.shards.of(original.task_id):
        attempt = attempt_of(original, 2)
    sharded.buffer.retry_seconds = 0.1
    real, lost = sharded._run, []

    def losing_the_first_create(script: Any, args: list[Any], keys: tuple[str, ...] = ()) -> Any:
        if script is sharded._create and not lost:
            lost.append(args)
            return lambda: (_ for _ in ()).throw(redis.ConnectionError("lost"))
        return real(script, args, keys)

    sharded._run = losing_the_first_create  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailable):
        sharded.spawn_retry(original.task_id, attempt)
    assert lost and sharded.get(attempt.task_id) is None
    assert sharded.get(original.task_id).retry == 1  # type: ignore[union-attr]
    assert sharded.spawn_retry(original.task_id, attempt) == 1  # again: nothing more spent
    assert sharded.get(attempt.task_id) is not None and sharded.get(original.task_id).retry == 1  # type: ignore[union-attr]
    assert sharded.spawn_retry(original.task_id, attempt) == 1
    started = sharded.start(attempt.task_id)
    assert started is not None and started.retries_left == 1  # the budget read from the original's shard


def test_get_async_wakes_on_the_done_key_of_the_tasks_shard(sharded: RedisBackend):
    """The asyncio waker blocks on the key the finishing script pushes: the task's shard's, not shard 0's."""
    from cogman.status import Status

    created = [record() for _ in range(8)]
    sharded.create(created)
    finished = next(r for r in created if sharded.shards.of(r.task_id) is not sharded.shards.single)
    sharded.transition(finished.task_id, Status.SUCCESS, result=1, returning=False)
    waker = sharded.async_waker()
    assert waker is not None
    assert sharded.client.exists(waker.done_key(finished.task_id)) == 1
