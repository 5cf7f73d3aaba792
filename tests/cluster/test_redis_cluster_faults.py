"""The Redis backend on a Redis Cluster: ``kill -9`` of the primary holding a running task's slot, mid-run.

The session's six-node cluster (redis_cluster_nodes.py, ``cluster-node-timeout`` 2 s) holds the task log
(16 shards over the three primaries); a worker process (``--processes 2``) and this test's sender use its
``redis+cluster://`` URL, RabbitMQ the test vhost. Once a third of the tasks are accepted, the primary
serving the slot of the newest accepted task is killed with SIGKILL; its replica takes over, and the killed
node is started again (empty: no persistence), coming back as the new primary's replica. Every task counts
its runs from its body in the suite's own Redis (tests/cluster/sentinel_app.py). After the sender is done,
the test waits for the run to drain (tests/cluster/redis_failover.py, shared with the Sentinel test).

With ``redis_wait_replicas=1``: 0 accepted tasks lost, 0 records missing or left non-final. Without it the
same run is measured, not asserted. The figures print as ``[figures] redis-cluster-failover ...``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from cogman import App
from tests.cluster.redis_cluster_nodes import RedisClusterNodes
from tests.cluster.redis_failover import run_through_a_kill
from tests.cluster.redis_nodes import wait_for


@pytest.mark.parametrize("wait_replicas", [1, 0], ids=["wait1", "nowait"])
def test_kill_9_of_the_primary_of_a_running_tasks_slot(
    redis_cluster_nodes: RedisClusterNodes, redis_cluster_url: str, broker: str, wait_replicas: int, tmp_path: Path
):
    nodes = redis_cluster_nodes

    def kill(sender: App, accepted: list[tuple[int, str]]) -> float:
        key = sender.backend.key(accepted[-1][1])  # type: ignore[attr-defined]
        port = nodes.primary_of(key)
        killed_at = time.monotonic()
        nodes.node(port).stop(signal.SIGKILL)
        wait_for(lambda: nodes.primary_of(key) != port, 60, "a replica to take over the killed primary's slots")
        promoted = time.monotonic() - killed_at
        nodes.node(port).start()  # back empty; it rejoins as the new primary's replica
        return promoted

    run_through_a_kill("redis-cluster-failover", broker=broker, backend_url=redis_cluster_url,
                       wait_replicas=wait_replicas, worker_args=["--processes", "2", "-c", "4"], tmp_path=tmp_path,
                       kill=kill)  # fmt: skip
