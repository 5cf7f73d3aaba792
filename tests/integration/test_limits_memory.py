"""Rate limits and concurrency on the embedded stack (memory broker and backend), with several workers
in one process: what the task bodies see, never cogman's own bookkeeping, decides.

The fleet version (two worker processes on RabbitMQ and Redis) is tests/integration/test_limits_fleet.py.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import httpx
import pytest

from cogman import App, Status, TaskFailed
from cogman.api import create_app
from cogman.backends.memory import limits as memory_limits
from cogman.backends.memory.limits import MemoryLimits
from cogman.brokers.base import HEADER_DEAD_LETTER_REASON
from cogman.brokers.memory import MemoryBroker
from cogman.errors import BackendUnavailable
from cogman.limits.policy import Rate
from cogman.worker.worker import Worker
from tests.integration.api_helpers import serving

#: Between the limiter admitting a start and the body reading the clock, a thread may be descheduled:
#: the windows the bodies measure are allowed this much slack (the store's own exactness is
#: tests/integration/test_limits_contract.py's).
CLOCK_SLACK = 0.25


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def workers(app: App) -> Iterator[Callable[[int], list[Worker]]]:
    """``workers(n)``: n workers of 4 threads on the app's memory broker; stopped afterwards."""
    started: list[Worker] = []

    def start(count: int) -> list[Worker]:
        started.extend(app.start_background(concurrency=4) for _ in range(count))
        return started

    yield start
    for worker in started:
        worker.stop()


class Peaks:
    """What the bodies see: how many run at once, per key, and the highest it got."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.runs: list[str] = []

    def run(self, key: str, seconds: float, run_id: str) -> None:
        with self.lock:
            self.running[key] += 1
            self.peak[key] = max(self.peak[key], self.running[key])
            self.runs.append(run_id)
        threading.Event().wait(seconds)  # the work
        with self.lock:
            self.running[key] -= 1


def assert_at_most(starts: list[float], count: int, period: float) -> None:
    ordered = sorted(starts)
    closest = min(ordered[i + count] - ordered[i] for i in range(len(ordered) - count))
    assert closest >= period - CLOCK_SLACK, f"{count + 1} starts within {closest:.3f} s (limit {count}/{period:g} s)"


def test_a_rate_limit_holds_across_workers_and_every_task_runs_once(app: App, workers):
    starts: dict[int, float] = {}

    @app.task(name="limited.rate", rate_limit="4/s")
    def limited(number: int) -> int:
        starts[number] = time.time()
        return number

    workers(2)
    results = [limited.delay(n) for n in range(12)]
    assert sorted(r.get(timeout=30) for r in results) == list(range(12))
    assert sorted(starts) == list(range(12))
    assert_at_most(list(starts.values()), 4, 1.0)
    assert max(starts.values()) - min(starts.values()) >= 2.0 - CLOCK_SLACK  # 12 at 4/s: 3 windows at least
    assert all(r.record().attempt == 1 for r in results)  # waiting is no retry


def test_a_rate_limit_per_key_limits_each_key_alone(app: App, workers):
    starts: dict[str, list[float]] = defaultdict(list)

    @app.task(name="limited.per_key", rate_limit="2/s", rate_limit_key=lambda customer, n: customer)
    def per_key(customer: str, n: int) -> None:
        starts[customer].append(time.time())

    workers(2)
    results = [per_key.delay(customer, n) for n in range(6) for customer in ("acme", "globex")]
    for result in results:
        result.get(timeout=30)
    for customer in ("acme", "globex"):
        assert len(starts[customer]) == 6
        assert_at_most(starts[customer], 2, 1.0)
    both = sorted(starts["acme"] + starts["globex"])
    assert min(both[i + 2] - both[i] for i in range(len(both) - 2)) < 1.0 - CLOCK_SLACK  # keys did not share one limit


def test_per_key_concurrency_holds_across_workers(app: App, workers):
    peaks = Peaks()

    @app.task(name="limited.per_customer", max_concurrency=2, concurrency_key=lambda customer, **kw: customer)
    def per_customer(customer: str, run: int) -> None:
        peaks.run(customer, 0.15, f"{customer}-{run}")

    workers(2)
    results = [per_customer.delay(customer, run=n) for n in range(6) for customer in ("acme", "globex", "initech")]
    for result in results:
        result.get(timeout=30)
    assert dict(peaks.peak) == {"acme": 2, "globex": 2, "initech": 2}
    assert sorted(peaks.runs) == sorted(f"{c}-{n}" for n in range(6) for c in ("acme", "globex", "initech"))


def test_max_concurrency_without_a_key_limits_the_task_name(app: App, workers):
    peaks = Peaks()

    @app.task(name="limited.whole", max_concurrency=1)
    def whole(run: int) -> None:
        peaks.run("all", 0.05, str(run))

    workers(2)
    for result in [whole.delay(n) for n in range(6)]:
        result.get(timeout=30)
    assert peaks.peak["all"] == 1 and sorted(peaks.runs, key=int) == [str(n) for n in range(6)]


def test_a_slot_is_freed_after_a_failure_and_its_retry(app: App, workers):
    peaks = Peaks()
    attempts: list[int] = []

    @app.task(name="limited.flaky", max_concurrency=1, retry=2)
    def flaky(run: int) -> str:
        attempts.append(run)
        peaks.run("all", 0.02, str(run))
        if run == 0 and attempts.count(0) < 3:
            raise RuntimeError("not yet")
        return "done"

    @app.task(name="limited.failing", max_concurrency=1)
    def failing() -> None:
        raise RuntimeError("always")

    workers(1)
    first, second = flaky.delay(0), flaky.delay(1)
    assert (first.get(timeout=30), second.get(timeout=30)) == ("done", "done")
    with pytest.raises(TaskFailed):
        failing.delay().get(timeout=30)
    assert attempts.count(0) == 3 and peaks.peak["all"] == 1
    store = app.backend.limits()  # a slot is freed just after the outcome a handle sees is recorded
    wait_until(lambda: store.acquire_slot("limited.flaky", "probe", 1, 60.0), 10, "no flaky slot left behind")
    wait_until(lambda: store.acquire_slot("limited.failing", "probe", 1, 60.0), 10, "no failing slot left behind")


def test_a_start_refused_by_the_rate_gives_its_slot_back_at_once(app: App, workers):
    @app.task(name="limited.both", max_concurrency=1, rate_limit="1/m")
    def both(number: int) -> int:
        return number

    workers(1)
    assert both.delay(1).get(timeout=30) == 1
    second = both.delay(2)
    store = app.backend.limits()
    wait_until(lambda: store.waiting(second.id) is not None, 10, "the second task to wait")
    assert store.waiting(second.id).startswith("rate_limit 1/m reached for limited.both")  # type: ignore[union-attr]
    assert store.acquire_slot("limited.both", "probe", 1, 60.0)  # the waiting task holds no slot


def test_waiting_counts_no_start_and_no_redelivery(workers):
    app = App("limits-waits", broker="memory://", backend="memory://", max_redeliveries=0)
    ran: list[int] = []

    @app.task(name="limited.slow_rate", rate_limit="2/s")
    def slow(number: int) -> None:
        ran.append(number)

    worker = app.start_background(concurrency=4)
    try:
        results = [slow.delay(n) for n in range(6)]  # the last ones wait several times over
        for result in results:
            result.get(timeout=30)
    finally:
        worker.stop()
        app.close()
    assert sorted(ran) == list(range(6))
    assert all(r.record().status is Status.SUCCESS for r in results)


def test_the_api_says_why_a_task_waits(app: App, workers):
    gate = threading.Event()

    @app.task(name="limited.one_at_a_time", max_concurrency=1)
    def one(number: int) -> int:
        gate.wait(30)
        return number

    workers(1)
    first = one.delay(1)
    wait_until(lambda: first.record().status is Status.IN_PROGRESS, 10, "the first task to run")
    second = one.delay(2)
    store = app.backend.limits()
    wait_until(lambda: store.waiting(second.id) is not None, 10, "the second task to wait")
    with serving(create_app(app)) as base:
        meta = httpx.get(f"{base}/get", params={"task_id": second.id}).json()["meta"]
        first_meta = httpx.get(f"{base}/get", params={"task_id": first.id}).json()["meta"]
    assert meta["waiting"].startswith("max_concurrency=1 reached for limited.one_at_a_time; tries again in")
    assert first_meta["waiting"] is None  # it runs
    assert second.record().status is Status.QUEUED
    gate.set()
    assert (first.get(timeout=30), second.get(timeout=30)) == (1, 2)


def test_a_key_function_that_raises_dead_letters_the_task_naming_it(app: App, workers):
    @app.task(name="limited.bad_key", max_concurrency=1, concurrency_key=lambda order: order["customer"])
    def bad_key(order: object) -> None:
        raise AssertionError("never runs")

    workers(1)
    result = bad_key.delay("not-a-dict")
    with pytest.raises(TaskFailed, match=r"concurrency_key of task limited.bad_key raised TypeError"):
        result.get(timeout=30)
    broker = app.broker
    assert isinstance(broker, MemoryBroker)
    [dead] = broker.dead_letters()
    assert "concurrency_key of task limited.bad_key raised TypeError" in dead.headers[HEADER_DEAD_LETTER_REASON]


class AwayStore(MemoryLimits):
    """The limits store of a backend that is away for its first ``away`` calls."""

    def __init__(self, away: int) -> None:
        super().__init__()
        self.away = away
        self.calls = 0

    def take_start(self, scope: str, rate: Rate, token: str) -> float:
        self.calls += 1
        if self.calls <= self.away:
            raise BackendUnavailable("the limits store is away")
        return super().take_start(scope, rate, token)


def test_while_the_store_is_away_a_limited_task_waits_and_never_runs_unlimited(monkeypatch: pytest.MonkeyPatch):
    store = AwayStore(away=3)
    monkeypatch.setattr(memory_limits, "limits_of", lambda backend: store)
    app = App("limits-away", broker="memory://", backend="memory://")
    ran: list[int] = []

    @app.task(name="limited.away", rate_limit="10/s")
    def away(number: int) -> None:
        ran.append(store.calls)

    worker = app.start_background(concurrency=1)
    try:
        away.delay(1).get(timeout=30)
    finally:
        worker.stop()
        app.close()
    assert ran == [4]  # it ran once, after the store answered (the worker waited 0.2 + 0.4 + 0.8 s)
