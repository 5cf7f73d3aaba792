"""The Redis backend behind Sentinel: ``kill -9`` of the primary during a run, with and without WAIT.

A Sentinel set (redis_nodes.py) holds the task log; a worker process (``-c 8``) and this test's sender use
its ``redis+sentinel://`` URL. Once a third of the tasks are accepted, the primary is killed with SIGKILL;
the sentinels promote the replica, and the killed server is started again (empty: no persistence), so
the set has a replica again once the sentinels turn it into one. Every task counts its runs from its body
in the suite's own Redis. After the sender is done, the test waits for the run to drain (every accepted
task ran and its record is final), or for nothing to change for STABLE seconds.

With ``redis_wait_replicas=1``: 0 accepted tasks lost, 0 records missing or left in a non-final state.
Without it the same run is measured, not asserted: what an asynchronous replica loses (docs/scaling.md).
The figures print as ``[figures] sentinel-failover ...`` (``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cogman import App
from tests.cluster.redis_nodes import SentinelSet, sentinel_set, wait_for
from tests.conftest import REDIS_URL
from tests.integration.rabbit_helpers import figures, worker_process

TASKS = int(os.environ.get("COGMAN_SENTINEL_TASKS", "5000"))
STABLE = 20.0
DRAIN_LIMIT = 300.0


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
    prefix = f"c3-{uuid.uuid4().hex[:8]}"
    counts = redis.Redis.from_url(REDIS_URL)
    env = {
        "COGMAN_BROKER_URL": broker,
        "COGMAN_BACKEND_URL": nodes.url,
        "COGMAN_REDIS_WAIT_REPLICAS": str(wait_replicas),
        "COGMAN_TEST_PREFIX": prefix,
        "COGMAN_TEST_COUNT_URL": REDIS_URL,
    }
    worker = worker_process("tests.cluster.sentinel_app", env, "-c", "8", log=tmp_path / "worker.log")
    sender = App("sentinel-sender", broker=broker, backend=nodes.url, redis_prefix=prefix,
                 redis_wait_replicas=wait_replicas)  # fmt: skip
    accepted: list[tuple[int, str]] = []
    refused: list[str] = []

    def send() -> None:
        for index in range(TASKS):
            try:
                accepted.append((index, sender.send_task("sentinel.count", args=(index,)).id))
            except Exception as exc:  # counted and reported: a send that raised is not an accepted task
                refused.append(f"{type(exc).__name__}: {exc}")

    try:
        thread = threading.Thread(target=send, name="sentinel-sender")
        thread.start()
        wait_for(lambda: len(accepted) >= TASKS // 3 or not thread.is_alive(), 120, "a third of the sends")
        old = nodes.node(nodes.primary_port())
        killed_at = time.monotonic()
        old.stop(signal.SIGKILL)
        wait_for(lambda: nodes.primary_port() != old.port, 60, "the sentinels to promote the replica")
        promoted = time.monotonic() - killed_at
        old.start()  # back empty; the sentinels make it a replica of the new primary
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
        "sentinel-failover",
        redis_wait_replicas=wait_replicas,
        tasks=TASKS,
        accepted=len(accepted),
        send_raised=len(refused),
        promoted_after_s=round(promoted, 1),
        lost=len(state["lost"]),
        missing_records=len(state["missing"]),
        not_final=len(state["not_final"]),
        ran_twice=state["twice"],
        drained_after_send_s=round(drained, 1),
    )
    if wait_replicas:
        assert refused == []
        assert state["lost"] == [] and state["missing"] == [] and state["not_final"] == []


def drain(app: App, counts: redis.Redis, prefix: str, accepted: list[tuple[int, str]]) -> dict[str, object]:
    """Poll until every accepted task ran and is recorded final, or nothing changed for STABLE seconds."""
    deadline = time.monotonic() + DRAIN_LIMIT
    last, changed = None, time.monotonic()
    while True:
        runs = {int(k): int(v) for k, v in counts.hgetall(f"{prefix}:runs").items()}  # type: ignore[union-attr]
        lost = [task_id for index, task_id in accepted if not runs.get(index)]
        missing, not_final = [], []
        for _, task_id in accepted:
            record = app.backend.get(task_id)
            if record is None:
                missing.append(task_id)
            elif not record.status.is_final:
                not_final.append(task_id)
        now = time.monotonic()
        snapshot = (len(lost), len(missing), len(not_final))
        if snapshot != last:
            last, changed = snapshot, now
        if snapshot == (0, 0, 0) or now - changed > STABLE or now > deadline:
            twice = sum(1 for index, _ in accepted if runs.get(index, 0) > 1)
            return {"lost": lost, "missing": missing, "not_final": not_final, "twice": twice}
        time.sleep(1.0)


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
