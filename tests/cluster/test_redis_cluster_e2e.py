"""An app whose task log is on a Redis Cluster, end to end: a ``cogman worker --beat`` process on RabbitMQ
(the test vhost) and the session's six-node cluster (``redis+cluster://``), tasks, retries (the attempts in
other shards than their original), a chord (its set in the chord id's shard), the periodic ticks (claimed by
``create_new`` in each tick's shard), the worker's heartbeat (in shard 0), and the API's ``/list`` and
``/daterangecount`` over all the shards.
"""

from __future__ import annotations

import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import redis

from cogman import App, Signature, Status, chord, group
from cogman.api import create_app
from cogman.backends.base import TaskQuery
from tests.cluster.redis_nodes import wait_for
from tests.conftest import REDIS_URL
from tests.integration.api_helpers import serving
from tests.integration.rabbit_helpers import worker_process
from tests.integration.redis_helpers import drop_prefix


def test_tasks_retries_a_chord_ticks_and_the_api_on_a_redis_cluster(
    redis_cluster_url: str, broker: str, tmp_path: Path
):
    prefix = f"rce-{uuid.uuid4().hex[:8]}"
    counts = redis.Redis.from_url(REDIS_URL)
    env = {"COGMAN_BROKER_URL": broker, "COGMAN_BACKEND_URL": redis_cluster_url, "COGMAN_TEST_PREFIX": prefix,
           "COGMAN_TEST_COUNT_URL": REDIS_URL}  # fmt: skip
    worker = worker_process("tests.cluster.redis_cluster_app", env, "-c", "4", "--beat", log=tmp_path / "worker.log")
    client = App("rcluster", broker=broker, backend=redis_cluster_url, redis_prefix=prefix)
    try:
        adds = [client.send_task("rc.add", (i, i)) for i in range(40)]
        assert [r.get(timeout=60) for r in adds] == [2 * i for i in range(40)]

        flaky = [client.send_task("rc.flaky", (f"k{i}",), retry=3) for i in range(6)]
        assert [r.get(timeout=60) for r in flaky] == [3] * 6  # the third attempt succeeds
        for result in flaky:
            attempts = client.backend.query(TaskQuery(primary_key=None, name="rc.flaky", limit=100)).records
            chain = [r for r in attempts if r.original_task_id == result.id]
            assert sorted(r.attempt for r in chain) == [1, 2, 3]
            assert client.backend.get(result.id).retry == 1  # type: ignore[union-attr]  # 3 - 2 spent
        flaky_runs = {k.decode(): int(v) for k, v in counts.hgetall(f"{prefix}:runs:flaky").items()}
        assert flaky_runs == {f"k{i}": 3 for i in range(6)}

        members = group(Signature("rc.add", (i, 1), app=client) for i in range(30))
        result = chord(members, Signature("rc.total", (), app=client)).delay()
        assert result.get(timeout=60) == sum(i + 1 for i in range(30))
        assert list(counts.hgetall(f"{prefix}:runs:total").values()) == [b"1"]  # the callback ran once

        def ticks() -> list:
            return client.backend.query(TaskQuery(primary_key="periodic:rc-every-second", limit=100)).records

        wait_for(lambda: sum(r.status is Status.SUCCESS for r in ticks()) >= 3, 60, "three ticks run")
        assert set(counts.hgetall(f"{prefix}:runs:tick").values()) == {b"1"}  # each tick ran once

        wait_for(lambda: client.backend.live_workers(), 30, "the worker's heartbeat (in shard 0)")

        with serving(create_app(client)) as base, httpx.Client(base_url=base, timeout=30) as http:
            listed = http.get("/list", params={"limit": 1000}).json()
            everything = client.backend.query(TaskQuery(limit=1000))
            assert listed["meta"]["total"] == everything.total >= 40 + 18 + 31 + 3
            created = [t["created_at"] for t in listed["data"]]
            assert created == sorted(created, reverse=True)
            pages = [http.get("/list", params={"limit": 7, "skip": skip}).json() for skip in range(0, 35, 7)]
            assert [t["task_id"] for p in pages for t in p["data"]] == [t["task_id"] for t in listed["data"][:35]]
            adds_listed = http.get("/list", params={"name": "rc.add", "status": "success", "limit": 1000}).json()
            assert adds_listed["meta"]["total"] == 40 + 30
            failed = http.get("/list", params={"status": "failed", "name": "rc.flaky"}).json()
            assert failed["meta"]["total"] == 12  # two failed attempts of each of the six
            start = datetime.now(UTC) - timedelta(hours=1)
            counted = http.get("/daterangecount", params={"startDate": start.isoformat(), "interval": 1}).json()
            assert sum(b["Total"] for b in counted["data"]) == everything.total
            assert sum(b["CountFailed"] for b in counted["data"]) == 12
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        client.close()
        counts.close()
        drop_prefix(REDIS_URL, prefix)
    assert worker.returncode == 0
