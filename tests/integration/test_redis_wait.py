"""``redis_wait_replicas`` covers every write a lost failover could undo, not only the state changes
(issue 21): the chord's join, the claim of a periodic tick or a chord callback (``create_new``), a manual
retry's budget and a delete each go out with the WAIT barrier. On the suite's Redis, which has no replica,
a barrier asking for one can never be met: every such write is refused as an outage.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cogman.backends.redis.backend import RedisBackend
from cogman.config.settings import Config
from cogman.errors import BackendUnavailable
from cogman.status import Status
from tests.integration.redis_helpers import drop_prefix
from tests.integration.test_backend_contract import record


@pytest.fixture
def backends(redis_url: str) -> Iterator[tuple[RedisBackend, RedisBackend]]:
    """The same log twice: without WAIT, and asking for one replica within 50 ms (there is none)."""
    made = [
        RedisBackend(redis_url, Config(backend_url=redis_url, redis_prefix="waited", **options), retry_seconds=0.3)
        for options in ({}, {"redis_wait_replicas": 1, "redis_wait_timeout": 0.05})
    ]
    yield made[0], made[1]
    for backend in made:
        backend.close()
    drop_prefix(redis_url, "waited")


def test_every_write_waits_for_the_replicas_it_asks_for(backends: tuple[RedisBackend, RedisBackend]):
    plain, waited = backends
    original = record(retry=1)
    plain.create([original])
    plain.transition(original.task_id, Status.FAILED, fail_error="boom", returning=False)
    writes = {
        "join_chord": lambda: waited.join_chord("chord-1", 0, 2, '"ok"'),
        "create_new": lambda: waited.create_new(record()),
        "add_retries": lambda: waited.add_retries(original.task_id, 1),
    }
    for name, write in writes.items():
        with pytest.raises(BackendUnavailable):  # its reply is not trusted without the replica
            write()
            pytest.fail(f"{name} went through without the replica it asked for")
    waited.delete([original.task_id])
    fired: list[str | None] = []
    waited.durable(fired.append)
    assert fired == []  # the delete is parked until a replica has it, as any state change
    assert plain.join_chord("chord-2", 0, 1, '"ok"') == ['"ok"']  # without WAIT the same calls go through
