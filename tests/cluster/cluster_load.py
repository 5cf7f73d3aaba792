"""A run of the cluster fault tests: two worker processes, a sender thread, and the check of every task.

The queues are declared first through the first node with cogman's own ``Topology`` (RabbitMQ places a
quorum queue's leader on the declaring node by default), while the sender and the workers list the
nodes starting from the second: a fault on the leader's node and a fault on the clients' node are then
two different faults.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from kombu import Connection

from cogman import App
from cogman.brokers.rabbitmq.topology import Topology
from tests.cluster.cluster_app import TASK_NAME, make_app, runs_key
from tests.cluster.rabbit_cluster import Cluster, Node, wait_for

ROOT = Path(__file__).resolve().parents[2]
#: The order the clients list the nodes in: node 2 first (the leaders are on node 1).
CLIENT_ORDER = (1, 2, 0)
TASK_QUEUES = ("high_priority_queue_0", "low_priority_queue_0")


def declare_on_first_node(cluster: Cluster, app: App) -> None:
    """The queues ``app`` would declare (its config's arguments), declared through node 1."""
    topology = Topology.of(app.config)
    with Connection(f"amqp://guest:guest@127.0.0.1:{cluster.nodes[0].port}//", connect_timeout=10) as connection:
        topology.declare(connection.default_channel)
        topology.declare_delays(connection, ladder=True)


def leaders(via: Node) -> dict[str, str]:
    """Queue name -> the node leading it, as a running node reports it ('' while none is elected)."""
    out = via.ctl("list_queues", "name", "leader", "--formatter", "json", check=False, timeout=30)
    try:
        rows = json.loads(out)
    except ValueError:
        return {}
    return {row["name"]: str(row.get("leader") or "") for row in rows}


def task_queue_leader(cluster: Cluster, via: Node) -> str:
    """The one node that leads both task queues (a precondition of the leader faults)."""
    found = {leaders(via).get(name, "") for name in TASK_QUEUES}
    assert len(found) == 1 and "" not in found, f"the task queues' leaders: {found}"
    return found.pop()


def await_new_leaders(cluster: Cluster, gone: Node, timeout: float = 60) -> None:
    """Until a node other than ``gone`` leads both task queues, asked of a surviving node."""
    survivor = next(node for node in cluster.nodes if node is not gone)

    def elected() -> bool:
        found = leaders(survivor)
        return all(found.get(name, "") not in ("", gone.name) for name in TASK_QUEUES)

    wait_for(elected, timeout, f"a new leader of {TASK_QUEUES} after {gone.name} went away", interval=0.5)


@dataclass
class Load:
    """``total`` tasks sent by a thread through ``.delay()``; ``marked`` is set once ``mark`` are accepted."""

    cluster: Cluster
    redis_url: str
    prefix: str
    logs: Path
    total: int = 5000
    mark: int = 1000
    #: Tasks a second at most, so the sending spans the fault (5 s for 5,000): a rate, not a wait.
    rate: float = 1000.0
    accepted: dict[int, str] = field(default_factory=dict)
    raised: dict[int, str] = field(default_factory=dict)
    marked: threading.Event = field(default_factory=threading.Event)
    #: When set, the sender stops at this index until ``released`` is set: a fault that must happen while
    #: it sends (not after its last message, which a slow ``stop_app`` on a busy machine can reach) holds it.
    hold_at: int | None = None
    released: threading.Event = field(default_factory=threading.Event)
    workers: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.url = self.cluster.url(CLIENT_ORDER)
        self.app: App = make_app(self.url, self.redis_url, self.prefix)
        self.sender = threading.Thread(target=self._send, name="cluster-sender", daemon=True)

    def start_workers(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COGMAN_BROKER_URL": self.url,
               "COGMAN_BACKEND_URL": self.redis_url, "COGMAN_TEST_PREFIX": self.prefix}  # fmt: skip
        log = open(self.logs / "workers.log", "ab")  # noqa: SIM115 - the children's output
        try:
            self.workers = subprocess.Popen(
                [sys.executable, "-m", "cogman", "-A", "tests.cluster.cluster_app:app", "worker",
                 "--processes", "2", "-c", "4"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()

    def _send(self) -> None:
        task = self.app.tasks[TASK_NAME]
        began = time.monotonic()
        for index in range(self.total):
            ahead = index / self.rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
            if index == self.hold_at and not self.released.wait(300):
                self.raised[index] = "the sender was held at its mark and never released"
                return
            try:
                self.accepted[index] = task.delay(index).id
            except Exception as exc:  # not accepted: counted, and the test fails on it
                self.raised[index] = repr(exc)
            if index == self.mark:
                self.marked.set()

    def sender_node_port(self) -> int:
        """The AMQP port of the node the sender's publishing connection is on now."""
        connection = self.app.broker.publisher.link.connection
        return int(connection.connection.sock.getpeername()[1])

    def runs(self) -> dict[int, int]:
        store = redis.Redis.from_url(self.redis_url)
        try:
            return {int(k): int(v) for k, v in store.hgetall(runs_key(self.prefix)).items()}
        finally:
            store.close()

    def await_all_ran(self, timeout: float) -> None:
        def all_ran() -> bool:
            runs = self.runs()
            return all(index in runs for index in self.accepted)

        wait_for(all_ran, timeout, "every accepted task to run", interval=0.2)

    def statuses(self) -> dict[str, int]:
        """How many accepted tasks are in each status (``missing``: no record)."""
        counts: dict[str, int] = {}
        for task_id in self.accepted.values():
            record = self.app.backend.get(task_id)
            status = "missing" if record is None else record.status.value
            counts[status] = counts.get(status, 0) + 1
        return counts

    def await_all_success(self, timeout: float) -> dict[str, int]:
        seen: dict[str, int] = {}

        def all_success() -> bool:
            seen.clear()
            seen.update(self.statuses())
            return seen.get("success", 0) == len(self.accepted)

        # the caller asserts on the counts, which say more than a timeout
        with contextlib.suppress(AssertionError):
            wait_for(all_success, timeout, "every accepted task recorded success", interval=1.0)
        return seen

    def stop(self) -> None:
        """SIGTERM to the supervisor's group, SIGKILL past the grace; the sender's app closed."""
        if self.workers is not None and self.workers.poll() is None:
            os.killpg(self.workers.pid, signal.SIGTERM)
            try:
                self.workers.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.workers.pid, signal.SIGKILL)
                self.workers.wait(timeout=10)
        self.app.close()


def elapsed_since(moment: float) -> float:
    return round(time.monotonic() - moment, 2)
