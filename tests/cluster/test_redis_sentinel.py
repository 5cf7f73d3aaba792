"""The Redis backend behind Sentinel: ``kill -9`` of the primary during a run, with and without WAIT.

A Sentinel set (redis_nodes.py) holds the task log; a worker process (``-c 8``) and this test's sender use
its ``redis+sentinel://`` URL. Once a third of the tasks are accepted, the primary is killed with SIGKILL;
the sentinels promote the replica, and the killed server is started again (empty: no persistence), so
the set has a replica again once the sentinels turn it into one. Every task counts its runs from its body
in the suite's own Redis; the run and its checks are tests/cluster/redis_failover.py's.

With ``redis_wait_replicas=1``: 0 accepted tasks lost, 0 records missing or left in a non-final state.
Without it the same run is measured, not asserted: what an asynchronous replica loses (docs/scaling.md).
The figures print as ``[figures] sentinel-failover ...`` (``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cogman import App
from tests.cluster.redis_failover import run_through_a_kill
from tests.cluster.redis_nodes import SentinelSet, sentinel_set, wait_for


@pytest.fixture(scope="module")
def nodes() -> Iterator[SentinelSet]:
    with sentinel_set() as started:
        yield started


def healthy(nodes: SentinelSet) -> bool:
    """The primary the sentinels name has its replica online, and every sentinel sees that replica."""
    try:
        return nodes.replicas_in_sync(nodes.primary_port()) == 1
    except redis.RedisError:
        return False


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait1", "nowait"])
def test_kill_9_of_the_primary_mid_run(nodes: SentinelSet, broker: str, wait_replicas: int, tmp_path: Path):
    wait_for(lambda: healthy(nodes), 60, "the Sentinel set to have its primary and an online replica")

    def kill(sender: App, accepted: list[tuple[int, str]]) -> float:
        old = nodes.node(nodes.primary_port())
        killed_at = time.monotonic()
        old.stop(signal.SIGKILL)
        wait_for(lambda: nodes.primary_port() != old.port, 60, "the sentinels to promote the replica")
        promoted = time.monotonic() - killed_at
        old.start()  # back empty; the sentinels make it a replica of the new primary
        return promoted

    run_through_a_kill("sentinel-failover", broker=broker, backend_url=nodes.url, wait_replicas=wait_replicas,
                       worker_args=["-c", "8"], tmp_path=tmp_path, kill=kill)  # fmt: skip


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait1", "nowait"])
def test_a_write_the_replica_has_not_acknowledged_holds_the_ack(nodes: SentinelSet, wait_replicas: int):
    """The replica stopped (SIGSTOP): with WAIT, the write is parked and the durability barrier (what the
    worker acks through) waits until the replica has it; without WAIT, the primary's reply is enough."""
    wait_for(lambda: healthy(nodes), 60, "the Sentinel set to have its primary and an online replica")
    from cogman.backends.redis.backend import RedisBackend
    from cogman.config.settings import Config
    from cogman.priority import Priority
    from cogman.sending.client import new_record

    config = Config(broker_url="memory://", backend_url=nodes.url, redis_prefix=f"c3-{uuid.uuid4().hex[:8]}",
                    redis_wait_replicas=wait_replicas, redis_wait_timeout=0.2)  # fmt: skip
    backend = RedisBackend(nodes.url, config, retry_seconds=0.5)
    replica = next(server for server in nodes.data if server.port != nodes.primary_port())
    assert replica.process is not None
    fired: list[str | None] = []
    try:
        os.kill(replica.process.pid, signal.SIGSTOP)
        stored = backend.create([new_record("c3.task", (), {}, priority=Priority.HIGH, retry=0, primary_key=None,
                                             task_id="held")])  # fmt: skip
        backend.durable(fired.append)
        assert (stored, fired) == ((False, []) if wait_replicas else (True, [None]))
        os.kill(replica.process.pid, signal.SIGCONT)
        wait_for(lambda: fired, 30, "the barrier once the replica is back")
        assert fired == [None]
        record = backend.get("held")
        assert record is not None and record.task_id == "held"
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
        backend.delete(["held"])
        backend.close()
