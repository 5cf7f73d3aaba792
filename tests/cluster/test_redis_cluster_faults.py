"""The Redis backend on a Redis Cluster: ``kill -9`` of the primary holding a running task's slot, mid-run.

The session's six-node cluster (redis_cluster_nodes.py, ``cluster-node-timeout`` 2 s) holds the task log
(16 shards over the three primaries); a worker process (``--processes 2``) and this test's sender use its
``redis+cluster://`` URL, RabbitMQ the test vhost. Once a third of the tasks are accepted, the primary
serving the slot of the newest accepted task is killed with SIGKILL; its replica takes over, and the killed
node is started again (empty: no persistence), coming back as the new primary's replica. Every task counts
its runs from its body in the suite's own Redis (tests/cluster/sentinel_app.py). After the sender is done,
the test waits for the run to drain, as the Sentinel test does (test_redis_sentinel.drain).

With ``redis_wait_replicas=1``: 0 accepted tasks lost, 0 records missing or left non-final. Without it the
same run is measured, not asserted. The figures print as ``[figures] redis-cluster-failover ...``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from cogman import App
from tests.cluster.redis_cluster_nodes import RedisClusterNodes
from tests.cluster.redis_nodes import wait_for
from tests.cluster.test_redis_sentinel import drain
from tests.conftest import REDIS_URL
from tests.integration.rabbit_helpers import figures, worker_process

TASKS = int(os.environ.get("COGMAN_REDIS_CLUSTER_TASKS", "5000"))


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait1", "nowait"])
def test_kill_9_of_the_primary_of_a_running_tasks_slot(
    redis_cluster_nodes: RedisClusterNodes, redis_cluster_url: str, broker: str, wait_replicas: int, tmp_path: Path
):
    nodes, url = redis_cluster_nodes, redis_cluster_url
    prefix = f"rc-{uuid.uuid4().hex[:8]}"
    counts = redis.Redis.from_url(REDIS_URL)
    env = {
        "COGMAN_BROKER_URL": broker,
        "COGMAN_BACKEND_URL": url,
        "COGMAN_REDIS_WAIT_REPLICAS": str(wait_replicas),
        "COGMAN_TEST_PREFIX": prefix,
        "COGMAN_TEST_COUNT_URL": REDIS_URL,
    }
    worker = worker_process(
        "tests.cluster.sentinel_app", env, "--processes", "2", "-c", "4", log=tmp_path / "worker.log"
    )
    sender = App("cluster-sender", broker=broker, backend=url, redis_prefix=prefix, redis_wait_replicas=wait_replicas)
    accepted: list[tuple[int, str]] = []
    refused: list[str] = []

    def send() -> None:
        for index in range(TASKS):
            try:
                accepted.append((index, sender.send_task("sentinel.count", args=(index,)).id))
            except Exception as exc:  # counted and reported: a send that raised is not an accepted task
                refused.append(f"{type(exc).__name__}: {exc}")

    try:
        thread = threading.Thread(target=send, name="cluster-sender")
        thread.start()
        wait_for(lambda: len(accepted) >= TASKS // 3 or not thread.is_alive(), 120, "a third of the sends")
        running = accepted[-1][1]
        key = sender.backend.key(running)  # type: ignore[attr-defined]
        port = nodes.primary_of(key)
        killed_at = time.monotonic()
        nodes.node(port).stop(signal.SIGKILL)
        wait_for(lambda: nodes.primary_of(key) != port, 60, "a replica to take over the killed primary's slots")
        promoted = time.monotonic() - killed_at
        nodes.node(port).start()  # back empty; it rejoins as the new primary's replica
        thread.join(600)
        assert not thread.is_alive(), "the sender did not finish"
        sent_done = time.monotonic()
        state = drain(sender, counts, prefix, accepted)
        drained = time.monotonic() - sent_done
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        sender.close()
        keys = list(counts.scan_iter(f"{prefix}:*"))
        if keys:
            counts.delete(*keys)
        counts.close()

    figures(
        "redis-cluster-failover",
        redis_wait_replicas=wait_replicas,
        tasks=TASKS,
        accepted=len(accepted),
        send_raised=len(refused),
        promoted_after_s=round(promoted, 1),
        lost=len(state["lost"]),  # type: ignore[arg-type]
        missing_records=len(state["missing"]),  # type: ignore[arg-type]
        not_final=len(state["not_final"]),  # type: ignore[arg-type]
        ran_twice=state["twice"],
        drained_after_send_s=round(drained, 1),
    )
    if wait_replicas:
        assert refused == []
        assert state["lost"] == [] and state["missing"] == [] and state["not_final"] == []
