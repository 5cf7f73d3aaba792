"""cogman on a three-node RabbitMQ cluster with ``queue_type="quorum"`` and a URL listing the nodes (issue 21).

Each fault test sends 5,000 tasks from a thread while two worker processes (``--processes 2 -c 4``) run
them, breaks a node when 1,000 are accepted, and then checks every accepted task: it ran (its body counts
its runs in Redis) and its record is ``success``. Runs beyond the first are allowed (at-least-once) and
reported, not failed. ``pytest -s`` prints each run's ``[figures]`` (docs/scaling.md quotes them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cogman.brokers.base import DEAD_LETTER_QUEUE, queue_names
from cogman.brokers.rabbitmq.delay_ladder import level_name
from cogman.delays import LEVELS
from cogman.priority import Priority
from tests.cluster.cluster_app import TASK_NAME, make_app
from tests.cluster.cluster_load import (
    Load,
    await_new_leaders,
    declare_on_first_node,
    elapsed_since,
    task_queue_leader,
)
from tests.cluster.rabbit_cluster import Cluster

EVERY_QUEUE = {
    *queue_names(Priority.HIGH, 1),
    *queue_names(Priority.LOW, 1),
    DEAD_LETTER_QUEUE,
    *(level_name(level) for level in range(LEVELS)),
}


def test_every_queue_cogman_declares_is_a_quorum_queue_on_all_three_nodes(
    fresh_cluster: Cluster, redis_url: str, prefix: str
) -> None:
    """Both priority families, the whole delay ladder and the dead-letter place: each a quorum queue with a
    member on every node, declared by a client and a worker that were given only the node list."""
    app = make_app(fresh_cluster.url(), redis_url, prefix)
    try:
        worker = app.start_background(concurrency=1)
        try:
            result = app.tasks[TASK_NAME].delay(1)
            assert result.get(timeout=30) == 1
        finally:
            worker.stop()
    finally:
        app.close()
    out = fresh_cluster.nodes[2].ctl("list_queues", "name", "type", "members", "--formatter", "json")
    queues = {row["name"]: row for row in json.loads(out)}
    assert set(queues) == EVERY_QUEUE
    assert {name: row["type"] for name, row in queues.items()} == dict.fromkeys(EVERY_QUEUE, "quorum")
    everywhere = sorted(node.name for node in fresh_cluster.nodes)
    assert {name: sorted(row["members"]) for name, row in queues.items()} == dict.fromkeys(EVERY_QUEUE, everywhere)


@pytest.fixture
def load(fresh_cluster: Cluster, redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Load]:
    running = Load(fresh_cluster, redis_url, prefix, tmp_path)
    declare_on_first_node(fresh_cluster, running.app)
    try:
        yield running
    finally:
        running.stop()


def run_through(load: Load, scenario: str, fault: Callable[[], dict[str, object]]) -> None:
    """Send, break something at the mark (``fault`` returns once the fault is over, with its own figures),
    then check every accepted task and print the figures."""
    began = time.monotonic()
    load.start_workers()
    load.sender.start()
    assert load.marked.wait(120), "the sender did not reach the mark"
    at_fault, fault_began = len(load.accepted), time.monotonic()
    details = fault()
    fault_over = time.monotonic()
    details = {"accepted_when_fault_began": at_fault, "accepted_when_it_ended": len(load.accepted), **details}
    load.sender.join(300)
    assert not load.sender.is_alive(), "the sender did not finish within 300 s"
    load.await_all_ran(timeout=300)
    drained, since_fault_began = elapsed_since(fault_over), elapsed_since(fault_began)
    statuses = load.await_all_success(timeout=120)
    runs = load.runs()
    lost = [index for index in load.accepted if index not in runs]
    twice = sum(count - 1 for index, count in runs.items() if index in load.accepted)
    print(
        f"\n[figures] {scenario}: sent={load.total} accepted={len(load.accepted)} raised={len(load.raised)} "
        f"lost={len(lost)} statuses={statuses} ran_twice={twice} all_ran_after_fault_began={since_fault_began}s "
        f"drained_after_fault_ended={drained}s "
        f"whole_run={elapsed_since(began)}s " + " ".join(f"{key}={value}" for key, value in details.items())
    )
    assert load.raised == {}
    assert lost == []
    assert statuses == {"success": load.total}
    assert load.workers is not None and load.workers.poll() is None, "a worker process exited during the run"


def test_the_leader_node_stopped_and_started_mid_run_loses_nothing(load: Load) -> None:
    """``rabbitmqctl stop_app`` on the node leading the task queues, 1,000 tasks in: the clients (on other
    nodes) keep their connections while the survivors elect new leaders; then the node comes back."""
    cluster = load.cluster
    leader = cluster.node_named(task_queue_leader(cluster, cluster.nodes[1]))

    def stop_the_leader() -> dict[str, object]:
        began = time.monotonic()
        leader.ctl("stop_app")
        await_new_leaders(cluster, leader)
        elected = elapsed_since(began)
        leader.ctl("start_app")
        leader.await_startup()
        return {"node": leader.name, "new_leaders_after": f"{elected}s", "node_away": f"{elapsed_since(began)}s"}

    run_through(load, "cluster-leader-stop-app", stop_the_leader)


def test_the_leader_node_killed_mid_run_loses_nothing(load: Load) -> None:
    """``kill -9`` of the Erlang VM leading the task queues, 1,000 tasks in: no goodbye to the cluster; the
    two survivors are a majority, elect new leaders, and the run finishes on them (the node stays down)."""
    cluster = load.cluster
    leader = cluster.node_named(task_queue_leader(cluster, cluster.nodes[1]))

    def kill_the_leader() -> dict[str, object]:
        began = time.monotonic()
        leader.kill()
        await_new_leaders(cluster, leader)
        return {"node": leader.name, "new_leaders_after": f"{elapsed_since(began)}s"}

    run_through(load, "cluster-leader-kill-9", kill_the_leader)


def test_the_node_the_sender_is_connected_to_stopped_while_it_sends_loses_nothing(load: Load) -> None:
    """``rabbitmqctl stop_app`` on the node the sender publishes through, 1,000 tasks in: the sender's
    unconfirmed messages go back to its outbox and it redials the next node of its list while it keeps
    sending; the workers on that node move too. The node comes back once the sender is done. The sender
    waits at 2,000 until the node is stopped, so 3,000 sends are left to go through another node."""
    cluster = load.cluster
    load.hold_at = 2000

    def stop_the_senders_node() -> dict[str, object]:
        port = load.sender_node_port()
        node = next(node for node in cluster.nodes if node.port == port)
        assert node.name != task_queue_leader(cluster, node), "the sender's node should not lead the queues here"
        began = time.monotonic()
        try:
            node.ctl("stop_app")
            stopped_at = len(load.accepted)
        finally:
            load.released.set()
        load.sender.join(300)
        moved_to = load.sender_node_port()
        node.ctl("start_app")
        node.await_startup()
        assert moved_to != port, "the sender did not move to another node"
        return {"node": node.name, "accepted_before_stop": stopped_at, "sender_moved_to": moved_to,
                "node_away": f"{elapsed_since(began)}s"}  # fmt: skip

    run_through(load, "cluster-sender-node-stop-app", stop_the_senders_node)
