"""Rate limits and per-key concurrency across a fleet: two ``cogman worker`` processes on the real
RabbitMQ and Redis. The bodies report what they see in Redis (limits_app.py): start times, and a
counter of the runs going on now; the assertions read only those, never cogman's own bookkeeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cogman import App, Status
from cogman.brokers.base import DEAD_LETTER_QUEUE
from cogman.worker.admission import SLOT_WAIT
from tests.integration.rabbit_helpers import depth, wait_for, worker_process
from tests.integration.redis_helpers import drop_prefix

APP = "tests.integration.limits_app"
LEASE = 2.0  #: ``concurrency_lease`` of these workers: short, so a killed worker's slot frees soon
#: Between the limiter admitting a start and the body reading the clock, a process may be descheduled
#: (2 CPU cores, shared): the windows the bodies measure are allowed this much slack; the store's own
#: exactness is tests/integration/test_limits_contract.py's.
CLOCK_SLACK = 0.25


class Fleet:
    def __init__(self, env: dict[str, str], client: App, tmp_path: Path) -> None:
        self.env, self.client, self.tmp_path = env, client, tmp_path
        self.redis = redis.Redis.from_url(env["COGMAN_BACKEND_URL"])
        self.workers: list[subprocess.Popen[bytes]] = []

    def start(self, count: int = 2, concurrency: int = 4) -> list[subprocess.Popen[bytes]]:
        for _ in range(count):
            log = self.tmp_path / f"worker{len(self.workers)}.log"
            self.workers.append(worker_process(APP, self.env, "-c", str(concurrency), log=log))
        return self.workers

    def starts(self, what: str) -> list[dict[str, Any]]:
        prefix = self.env["COGMAN_TEST_PREFIX"]
        raw: list[bytes] = self.redis.lrange(f"{prefix}:body:starts:{what}", 0, -1)  # type: ignore[assignment]
        return [json.loads(item) for item in raw]

    def seen(self, scope: str) -> list[int]:
        raw: list[bytes] = self.redis.lrange(f"{self.env['COGMAN_TEST_PREFIX']}:body:seen:{scope}", 0, -1)  # type: ignore[assignment]
        return [int(item) for item in raw]

    def all_final(self, ids: list[str]) -> Callable[[], bool]:
        def check() -> bool:
            records = [self.client.backend.get(task_id) for task_id in ids]
            return all(r is not None and r.status.is_final for r in records)

        return check

    def succeeded(self, ids: list[str], timeout: float) -> None:
        wait_for(self.all_final(ids), timeout, f"{len(ids)} tasks to end", interval=0.2)
        statuses = {self.client.backend.get(task_id).status for task_id in ids}  # type: ignore[union-attr]
        assert statuses == {Status.SUCCESS}
        assert depth(self.env["COGMAN_BROKER_URL"], DEAD_LETTER_QUEUE) == 0


@pytest.fixture
def fleet(rabbit: str, redis_url: str, tmp_path: Path) -> Iterator[Fleet]:
    prefix = f"cogman-limits-{uuid.uuid4().hex[:8]}"
    env = {
        "COGMAN_BROKER_URL": rabbit,
        "COGMAN_BACKEND_URL": redis_url,
        "COGMAN_TEST_PREFIX": prefix,
        "COGMAN_CONCURRENCY_LEASE": str(LEASE),
    }
    client = App("limits-client", broker=rabbit, backend=redis_url, redis_prefix=prefix)
    made = Fleet(env, client, tmp_path)
    try:
        yield made
    finally:
        for worker in made.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in made.workers:
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)
        client.close()
        drop_prefix(redis_url, prefix)


def test_a_rate_limit_holds_across_two_worker_processes(fleet: Fleet):
    fleet.start(2)
    ids = [fleet.client.send_task("fleet.rate", args=(n,)).id for n in range(20)]
    fleet.succeeded(ids, 120)
    starts = fleet.starts("rate")
    assert sorted(s["n"] for s in starts) == list(range(20))  # each ran once
    assert len({s["pid"] for s in starts}) == 2  # both workers started some
    moments = sorted(s["t"] for s in starts)
    closest = min(moments[i + 5] - moments[i] for i in range(len(moments) - 5))
    assert closest >= 1.0 - CLOCK_SLACK, f"6 starts within {closest:.3f} s under rate_limit='5/s'"
    took = moments[-1] - moments[0]
    print(f"\n[figures] 20 tasks at rate_limit='5/s' on 2 workers: {took:.1f} s from the first start to the last")


def test_per_key_concurrency_holds_across_two_worker_processes(fleet: Fleet):
    fleet.start(2)
    customers = ("acme", "globex")
    ids = [
        fleet.client.send_task("fleet.per_customer", args=(customer,), kwargs={"run": n}).id
        for n in range(8)
        for customer in customers
    ]
    fleet.succeeded(ids, 120)
    starts = fleet.starts("per_customer")
    assert sorted((s["customer"], s["run"]) for s in starts) == sorted((c, n) for c in customers for n in range(8))
    assert len({s["pid"] for s in starts}) == 2
    for customer in customers:
        seen = fleet.seen(customer)
        assert len(seen) == 8 and max(seen) <= 2, f"{customer}: runs at once {seen}"
    assert max(fleet.seen("acme") + fleet.seen("globex")) == 2  # the limit was reached, not just never tried


def test_a_running_task_keeps_its_slot_past_the_lease_by_renewing_it(fleet: Fleet):
    fleet.start(2)
    ids = [fleet.client.send_task("fleet.long", args=(n, 2.5 * LEASE)).id for n in range(2)]
    fleet.succeeded(ids, 120)
    assert fleet.seen("long") == [1, 1]
    first, second = sorted(fleet.starts("long"), key=lambda s: s["t"])
    assert second["t"] - first["t"] >= 2.5 * LEASE - CLOCK_SLACK  # the second waited for the first to end


def test_a_sigkilled_workers_slot_is_free_again_within_the_lease(fleet: Fleet):
    workers = fleet.start(2)
    run = uuid.uuid4().hex[:8]
    blocked = fleet.client.send_task("fleet.blocker", args=(run, True)).id
    wait_for(lambda: fleet.starts("blocker"), 60, "the blocker to start")
    [holder] = fleet.starts("blocker")
    follower = fleet.client.send_task("fleet.blocker", args=(f"{run}-follower", False)).id
    wait_for(lambda: fleet.client.backend.limits().waiting(follower), 30, "the follower to wait")
    victim = next(w for w in workers if w.pid == holder["pid"])
    killed_at = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(30)
    fleet.succeeded([blocked, follower], 60)
    later = [s for s in fleet.starts("blocker") if s["t"] > killed_at]
    assert {s["run"] for s in later} == {run, f"{run}-follower"}  # the killed run again, and the follower
    assert all(s["pid"] != victim.pid for s in later)
    assert not any(s["t"] < killed_at for s in fleet.starts("blocker") if s["run"] != run)  # held until the kill
    # Freed within the lease; the waiting task then comes back from the delay ladder (whole seconds).
    bound = LEASE + SLOT_WAIT[1] + 1.0 + 2.0
    first_after = min(s["t"] for s in later) - killed_at
    assert first_after <= bound, f"the slot was taken again {first_after:.1f} s after the kill (lease {LEASE} s)"
    print(f"\n[figures] slot of a SIGKILLed worker taken again {first_after:.1f} s after the kill (lease {LEASE:g} s)")
