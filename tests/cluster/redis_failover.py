"""One run of the Redis failover tests (Sentinel, Redis Cluster): a sender thread and a worker process
through a ``kill -9`` of a primary, then the check of every accepted task.

Every task counts its runs from its body in the suite's own Redis (tests/cluster/sentinel_app.py). Once a
third of the tasks are accepted, ``kill`` (the test's own fault: which primary, and how the takeover is
seen) runs; after the sender is done, the run drains: every accepted task ran and its record is final,
or nothing changed for STABLE seconds. The figures print as ``[figures] <label> ...`` (``pytest -s``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

from cogman import App
from tests.cluster.redis_nodes import wait_for
from tests.conftest import REDIS_URL
from tests.integration.rabbit_helpers import figures, worker_process
from tests.integration.redis_helpers import drop_prefix

TASKS = int(os.environ.get("COGMAN_FAILOVER_TASKS", "5000"))
STABLE = 20.0
DRAIN_LIMIT = 300.0

#: Kills a primary once a third of the tasks are accepted, waits for the takeover, starts the killed node
#: again; gets the sender and the ids accepted so far, returns the seconds the takeover took.
Kill = Callable[[App, list[tuple[int, str]]], float]


def run_through_a_kill(
    label: str,
    *,
    broker: str,
    backend_url: str,
    wait_replicas: int,
    worker_args: Sequence[str],
    tmp_path: Path,
    kill: Kill,
) -> None:
    """With ``wait_replicas`` (WAIT for one replica): 0 accepted tasks lost, 0 records missing or left
    non-final, and no send raised. Without it the same run is measured, not asserted."""
    prefix = f"fo-{uuid.uuid4().hex[:8]}"
    counts = redis.Redis.from_url(REDIS_URL)
    env = {
        "COGMAN_BROKER_URL": broker,
        "COGMAN_BACKEND_URL": backend_url,
        "COGMAN_REDIS_WAIT_REPLICAS": str(wait_replicas),
        "COGMAN_TEST_PREFIX": prefix,
        "COGMAN_TEST_COUNT_URL": REDIS_URL,
    }
    worker = worker_process("tests.cluster.sentinel_app", env, *worker_args, log=tmp_path / "worker.log")
    sender = App(f"{label}-sender", broker=broker, backend=backend_url, redis_prefix=prefix,
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
        thread = threading.Thread(target=send, name=f"{label}-sender")
        thread.start()
        wait_for(lambda: len(accepted) >= TASKS // 3 or not thread.is_alive(), 120, "a third of the sends")
        promoted = kill(sender, accepted)
        thread.join(600)
        assert not thread.is_alive(), "the sender did not finish"
        sent_done = time.monotonic()
        state = drain(sender, counts, prefix, accepted)
        drained = time.monotonic() - sent_done
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        sender.close()
        counts.close()
        drop_prefix(REDIS_URL, prefix)

    figures(
        label,
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
