"""Retries and delays through the delay ladder on quorum queues, on the three-node cluster (issue 21).

On quorum queues a delayed message leaves each ladder level by dead-lettering (``x-dead-letter-exchange``,
at-least-once), and RabbitMQ drops a dead-lettered message whose ``x-death`` shows it was dead-lettered
from its target queue before with no ``rejected`` in between: a "cycle". A retry passes through the
same levels as the attempt before it, so a retry that carried its predecessor's ``x-death`` would be
eaten. cogman publishes each retry as a new message with its own headers; the first test shows five
retries through the same two levels arriving, the second shows the cycle rule is real on this cluster
(so the first would fail if the headers were carried).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import amqp
import kombu
import pytest
import redis

from cogman import App
from cogman.brokers.base import DEAD_LETTER_QUEUE
from cogman.brokers.rabbitmq.delay_ladder import delay_routing_key, delivery_exchange, level_name, unroutable_exchange
from cogman.brokers.rabbitmq.topology import Topology
from cogman.delays import LEVELS
from cogman.priority import Priority
from cogman.status import Status
from tests.cluster.cluster_load import CLIENT_ORDER, ROOT, declare_on_first_node
from tests.cluster.ladder_app import BACKOFF, FLAKY, RETRIES, make_ladder_app, runs_key
from tests.cluster.rabbit_cluster import Cluster

#: The levels a 3 s wait goes through: level 1 (2 s), then dead-lettered into level 0 (1 s).
LEVELS_OF_BACKOFF = (level_name(1), level_name(0))


def amqp_connection(cluster: Cluster) -> amqp.Connection:
    connection = amqp.Connection(f"127.0.0.1:{cluster.nodes[0].port}", connect_timeout=10)
    connection.connect()
    return connection


@dataclass
class LevelWatch:
    """Counts how many times each watched queue went from empty to holding a message, by polling its
    message count (a passive declare, 20 times a second): a retry that waits on a level shows up as one
    such entry, as each wait there lasts a second or more."""

    cluster: Cluster
    queues: tuple[str, ...]
    entries: dict[str, int] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.entries = dict.fromkeys(self.queues, 0)
        self.thread = threading.Thread(target=self._watch, name="level-watch", daemon=True)

    def _watch(self) -> None:
        connection = amqp_connection(self.cluster)
        try:
            channel = connection.channel()
            held = dict.fromkeys(self.queues, False)
            while not self.stopping.wait(0.05):
                for name in self.queues:
                    now_held = channel.queue_declare(name, passive=True).message_count > 0
                    if now_held and not held[name]:
                        self.entries[name] += 1
                    held[name] = now_held
        finally:
            connection.close()

    def __enter__(self) -> LevelWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)


def message_counts(cluster: Cluster, names: list[str]) -> dict[str, int]:
    connection = amqp_connection(cluster)
    try:
        channel = connection.channel()
        return {name: channel.queue_declare(name, passive=True).message_count for name in names}
    finally:
        connection.close()


@dataclass
class Ladder:
    """The app as a client (node list from the second node), its queues declared through the first node,
    and one ``cogman worker`` process."""

    cluster: Cluster
    redis_url: str
    prefix: str
    logs: Path
    app: App = field(init=False)
    worker: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.url = self.cluster.url(CLIENT_ORDER)
        self.app = make_ladder_app(self.url, self.redis_url, self.prefix)

    def start_worker(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COGMAN_BROKER_URL": self.url,
               "COGMAN_BACKEND_URL": self.redis_url, "COGMAN_TEST_PREFIX": self.prefix}  # fmt: skip
        log = open(self.logs / "worker.log", "ab")  # noqa: SIM115 - the child's output
        try:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "cogman", "-A", "tests.cluster.ladder_app:app", "worker", "-c", "2"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        finally:
            log.close()

    def runs(self, original_task_id: str) -> list[tuple[int, str]]:
        """``(attempt, task id)`` of every run of the chain, in the order they ran."""
        store = redis.Redis.from_url(self.redis_url)
        try:
            entries = store.lrange(runs_key(self.prefix, original_task_id), 0, -1)
        finally:
            store.close()
        texts = [entry.decode() if isinstance(entry, bytes) else entry for entry in entries]
        return [(int(attempt), task_id) for attempt, task_id in (text.split(":") for text in texts)]

    def stop(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait(timeout=10)
        self.app.close()


@pytest.fixture
def ladder(fresh_cluster: Cluster, redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Ladder]:
    running = Ladder(fresh_cluster, redis_url, prefix, tmp_path)
    declare_on_first_node(fresh_cluster, running.app)
    try:
        yield running
    finally:
        running.stop()
        log = tmp_path / "worker.log"
        if log.exists():
            print(f"\n[worker.log, last lines]\n{''.join(log.read_text().splitlines(True)[-20:])}")


def test_a_task_failing_five_times_then_succeeding_runs_six_times_through_the_same_ladder_levels(
    ladder: Ladder,
) -> None:
    """retry=5, a constant 3 s backoff, a real worker: five failures, each retry waiting in level 1 and
    then (dead-lettered into it) level 0, and the sixth run succeeds. Every run is counted by the body;
    each level is seen holding a retry at least twice, so a later retry passed a level an earlier one had
    already been dead-lettered from: the case RabbitMQ's cycle detection would eat if x-death were
    carried over. Nothing is left in the ladder or dead-lettered."""
    began = time.monotonic()
    ladder.start_worker()
    with LevelWatch(ladder.cluster, LEVELS_OF_BACKOFF) as watch:
        sent = ladder.app.tasks[FLAKY].delay(RETRIES)
        assert sent.get(timeout=180) == RETRIES + 1
    elapsed = time.monotonic() - began

    runs = ladder.runs(sent.id)
    assert [attempt for attempt, _ in runs] == list(range(1, RETRIES + 2))
    ids = [task_id for _, task_id in runs]
    assert ids[0] == sent.id and len(set(ids)) == len(ids)
    records = [ladder.app.backend.get(task_id) for task_id in ids]
    assert all(record is not None for record in records)
    for number, record in enumerate(records, start=1):
        assert record is not None
        assert (record.original_task_id, record.attempt) == (sent.id, number)
        if number <= RETRIES:
            assert record.status is Status.FAILED
            assert record.fail_error == f"ConnectionError: run {number} of the {RETRIES} that fail"
        else:
            assert record.status is Status.SUCCESS and record.result == RETRIES + 1
        if number > 1:  # a retry: planned BACKOFF after its predecessor failed, started no earlier
            assert record.eta is not None
            assert dict(record.history)[Status.IN_PROGRESS] >= record.eta
    original = records[0]
    assert original is not None and original.latest_attempt_id == ids[-1] and original.retry == 0
    assert sent.latest().task_id == ids[-1]

    print(f"\n[figures] quorum-ladder-retries: runs={len(runs)} backoff={BACKOFF}s "
          f"level_entries={watch.entries} sent_to_success={elapsed:.1f}s")  # fmt: skip
    assert all(count >= 2 for count in watch.entries.values()), watch.entries
    leftover = message_counts(ladder.cluster, [*(level_name(level) for level in range(LEVELS)), DEAD_LETTER_QUEUE])
    assert leftover == dict.fromkeys(leftover, 0)
    assert ladder.worker is not None and ladder.worker.poll() is None, "the worker exited during the run"


CYCLE_PREFIX = "d1cycle"


@pytest.fixture
def cycle_ladder(fresh_cluster: Cluster) -> Iterator[Topology]:
    """A ladder of its own (``d1cycle.cogman.delay.*``) and one task queue; its exchanges are deleted
    afterwards (``fresh_cluster`` deletes the queues)."""
    topology = Topology(queue_type="quorum", prefix=CYCLE_PREFIX)
    with kombu.Connection(f"amqp://guest:guest@127.0.0.1:{fresh_cluster.nodes[0].port}//") as declaring:
        topology.declare(declaring.default_channel, (Priority.HIGH,))
        topology.declare_delays(declaring, (Priority.HIGH,), ladder=True)
    connection = amqp_connection(fresh_cluster)
    try:
        yield topology
    finally:
        channel = connection.channel()
        for name in [level_name(level, CYCLE_PREFIX) for level in range(LEVELS)]:
            channel.exchange_delete(name)
        channel.exchange_delete(delivery_exchange(CYCLE_PREFIX))
        channel.exchange_delete(unroutable_exchange(CYCLE_PREFIX))
        connection.close()


def test_rabbitmq_drops_a_delayed_message_that_carries_its_earlier_trips_x_death(
    fresh_cluster: Cluster, cycle_ladder: Topology
) -> None:
    """Why the retries above must not carry ``x-death``: a message sent through the 3 s path once comes
    out with two x-death entries (levels 0 and 1, ``expired``); published again through the same path
    with those headers, it is dropped when level 1 dead-letters it into level 0, while a copy without
    them, published just after it, arrives. Each level is first-in first-out with one TTL, so the copy
    arriving means the first message was already dealt with."""
    target = cycle_ladder.names(Priority.HIGH)[0]
    exchange, key = level_name(1, CYCLE_PREFIX), delay_routing_key(3, target)
    connection = amqp_connection(fresh_cluster)
    try:
        channel = connection.channel()
        channel.confirm_select()

        def publish(body: str, headers: dict[str, Any]) -> None:
            channel.basic_publish(amqp.Message(body, application_headers=headers, delivery_mode=2), exchange, key)

        def arrival() -> tuple[str, dict[str, Any]]:
            """The next message into the target queue (acked): its body and headers."""
            deadline = time.monotonic() + 60
            while (message := channel.basic_get(target)) is None:
                assert time.monotonic() < deadline, f"no message came into {target} within 60 s"
                time.sleep(0.05)
            channel.basic_ack(message.delivery_tag)
            body = message.body if isinstance(message.body, str) else message.body.decode()
            return body, dict(message.headers)

        publish("first trip", {"probe": "1"})
        _, headers = arrival()
        deaths = headers["x-death"]
        assert [(death["queue"], death["reason"]) for death in deaths] == [
            (level_name(0, CYCLE_PREFIX), "expired"),
            (level_name(1, CYCLE_PREFIX), "expired"),
        ]
        publish("carries x-death", {"probe": "2", "x-death": deaths})
        publish("fresh headers", {"probe": "3"})
        assert arrival()[0] == "fresh headers"
    finally:
        connection.close()
    ladder_queues = [level_name(level, CYCLE_PREFIX) for level in range(LEVELS)]
    assert message_counts(fresh_cluster, [target, *ladder_queues]) == dict.fromkeys([target, *ladder_queues], 0)
