"""The backend contract and the Redis query tests, run against a real Redis Cluster (``redis+cluster://``).

The tests are those of tests/integration/test_backend_contract.py that take a ``backend``, collected here
again with a ``backend`` that is a RedisBackend on the session's six-node cluster (16 shards, each test
under a prefix of its own), and tests/integration/test_redis_sharded.py's comparison of every query
(filters, windows, pages, counts by status) with the unsharded log on one Redis, given the same writes.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator

import pytest

from cogman import Config
from cogman.backends.base import Backend
from cogman.backends.redis.backend import RedisBackend
from tests.integration import test_backend_contract as contract
from tests.integration.test_redis_sharded import (  # noqa: F401 (collected here)
    test_every_query_of_a_sharded_log_gives_the_unsharded_answers,
    unsharded,
)

for _name, _value in vars(contract).items():
    if _name.startswith("test_") and "backend" in inspect.signature(_value).parameters:
        globals()[_name] = _value  # collected here, against the cluster
population = contract.population


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from contract.made_backend(request, "redis-cluster")


@pytest.fixture
def sharded(redis_cluster_url: str) -> Iterator[RedisBackend]:
    """The log on the cluster (16 shards), under a prefix of this test's own."""
    prefix = f"sharded-{uuid.uuid4().hex[:8]}"
    made = RedisBackend(redis_cluster_url, Config(broker_url="memory://", redis_ttl=60, redis_prefix=prefix))
    yield made
    made.close()


def test_go_format_tasks_are_refused_on_a_cluster_and_reads_pass_them_by(sharded: RedisBackend):
    """Go Cogman has no Redis Cluster support and a bare TaskID's slot is no shard's: a Go-wire task
    cannot be recorded here (a clear error), and reading an unknown id asks no bare key."""
    from cogman.backends.base import TaskQuery
    from cogman.errors import ConfigError

    with pytest.raises(ConfigError, match="Go-format tasks"):
        sharded.go_records()
    assert sharded.get(str(uuid.uuid4())) is None
    assert sharded.query(TaskQuery()).total == 0
    assert sharded.async_waker() is None  # get_async waits in slices on a cluster
