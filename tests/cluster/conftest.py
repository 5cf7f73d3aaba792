"""Fixtures of the cluster tests: three local RabbitMQ nodes (rabbit_cluster.py) and a six-node Redis
Cluster (redis_cluster_nodes.py), each started once for the session, when a test asks for it.

Opt-in: the default ``pytest`` (``nox -s tests``) does not collect this folder, as the cluster costs
about 15 s to start and 500 MiB; ``COGMAN_CLUSTER_TESTS=1`` (``nox -s cluster``) does.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from kombu import Connection

from tests.cluster.rabbit_cluster import Cluster, Node
from tests.cluster.redis_cluster_nodes import RedisClusterNodes, redis_cluster
from tests.conftest import RABBITMQ_URL
from tests.integration.rabbit_helpers import ALL_QUEUES, VHOST

if os.environ.get("COGMAN_CLUSTER_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Three joined nodes, started once and stopped by pid at the end, whatever the tests did to them."""
    started = Cluster.create()
    try:
        started.start()
        print(f"\n[figures] rabbitmq-cluster-start: seconds={started.timings['start']:.1f} base={started.base}")
        yield started
    finally:
        started.stop()
        print(f"\n[figures] rabbitmq-cluster-stop: seconds={started.timings['stop']:.1f}")
        shutil.rmtree(started.base, ignore_errors=True)  # the nodes are down: their data goes with them


def restart_stopped(cluster: Cluster) -> None:
    """A node a failed test left stopped or killed is started again, so the next test has three."""
    for node in cluster.nodes:
        if node.process is None or node.process.poll() is not None:
            node.start()
            node.await_startup()
        elif node.ctl("eval", "rabbit:is_running().", check=False).strip() != "true":
            node.ctl("start_app")
    cluster.nodes[0].ctl("await_online_nodes", "3", "--timeout", "120")


def delete_all_queues(node: Node) -> None:
    names = [line for line in node.ctl("list_queues", "name", "--quiet", "--no-table-headers").split("\n") if line]
    if not names:
        return
    with Connection(f"amqp://guest:guest@127.0.0.1:{node.port}//", connect_timeout=10) as connection:
        channel = connection.channel()
        for name in names:
            channel.queue_delete(name)


@pytest.fixture
def fresh_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """The session's cluster with its three nodes running and no queue in it, before and after."""
    restart_stopped(cluster)
    delete_all_queues(cluster.nodes[0])
    yield cluster
    restart_stopped(cluster)
    delete_all_queues(cluster.nodes[0])


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A Redis key prefix of this test's own in the suite's database, dropped afterwards."""
    from tests.integration.redis_helpers import drop_prefix

    name = f"cogman-cluster-{uuid.uuid4().hex[:8]}"
    yield name
    drop_prefix(redis_url, name)


@pytest.fixture(scope="session")
def redis_cluster_nodes() -> Iterator[RedisClusterNodes]:
    """Three primaries and three replicas, started once and stopped by pid at the end."""
    with redis_cluster() as started:
        yield started


@pytest.fixture
def redis_cluster_url(redis_cluster_nodes: RedisClusterNodes) -> str:
    """The ``redis+cluster://`` URL of the session's Redis Cluster, all six nodes running."""
    redis_cluster_nodes.restart_dead()
    return redis_cluster_nodes.url


@pytest.fixture
def broker() -> Iterator[str]:
    """The test vhost (created beforehand: ``rabbitmqctl -n <node> add_vhost``), without cogman's queues."""
    parts = urlsplit(RABBITMQ_URL)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{VHOST}", "", ""))

    def reset() -> None:
        with Connection(url, connect_timeout=5) as connection:
            channel = connection.channel()
            for name in ALL_QUEUES:
                channel.queue_delete(name)

    try:
        reset()
    except Exception as exc:
        pytest.fail(f"cannot use vhost {VHOST!r} on {RABBITMQ_URL} ({exc}); create it with rabbitmqctl add_vhost")
    yield url
    reset()
