"""A real worker thread pool against the memory broker and backend: every task outcome, end to end."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

import pytest

from cogman import App, Config, Priority, Status, TaskContext, TaskFailed
from cogman.backends.base import TaskQuery
from cogman.brokers.base import HEADER_DEAD_LETTER_REASON
from cogman.brokers.memory import MemoryBroker


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """For state the test cannot be notified of (another component's counters)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def memory_broker(app: App) -> MemoryBroker:
    broker = app.broker
    assert isinstance(broker, MemoryBroker)
    return broker


def test_delay_runs_and_records_every_field(app: App):
    @app.task(name="add")
    def add(a, b):
        return a + b

    worker = app.start_background(concurrency=2)
    try:
        result = add.delay(2, 3)
        assert result.get(timeout=10) == 5
        record = result.record()
        assert record.status is Status.SUCCESS and record.result == 5
        assert record.name == "add" and record.original_task_id == record.task_id
        assert record.payload == {"args": [2, 3], "kwargs": {}}
        assert record.duration is not None and record.duration >= 0
        assert record.created_at <= record.updated_at
        assert app.result(result.id).status is Status.SUCCESS
    finally:
        worker.stop()


def test_send_options_and_send_task_by_name(app: App):
    seen = []

    @app.task(name="reports.build", bind=True)
    def build(ctx: TaskContext, day):
        seen.append((ctx.name, ctx.primary_key, ctx.retries_left, ctx.attempt))
        return day

    result = build.send(args=("2026-11-22",), priority="low", retry=5, primary_key="img-42")
    record = result.record()
    assert (record.priority, record.retry, record.primary_key, record.status) == (
        Priority.LOW,
        5,
        "img-42",
        Status.QUEUED,
    )
    by_name = app.send_task("reports.build", args=("2026-11-23",))
    worker = app.start_background(concurrency=1)
    try:
        assert result.get(timeout=10) == "2026-11-22"
        assert by_name.get(timeout=10) == "2026-11-23"
    finally:
        worker.stop()
    assert sorted(seen, key=str) == sorted([("reports.build", "img-42", 5, 1), ("reports.build", None, 0, 1)], key=str)


def test_plain_call_runs_locally_without_a_record(app: App):
    @app.task()
    def double(x):
        return 2 * x

    assert double(4) == 8
    assert app.backend.query(TaskQuery()).total == 0


def test_high_tasks_held_start_before_low_ones(app: App):
    order = []

    @app.task(name="job")
    def job(label):
        order.append(label)

    job.send_many([(f"low-{i}",) for i in range(30)], priority="low")
    job.send_many([(f"high-{i}",) for i in range(5)], priority="high")
    worker = app.start_background(concurrency=1)
    try:
        wait_until(lambda: len(order) == 35)
    finally:
        worker.stop()
    assert order[:5] == [f"high-{i}" for i in range(5)]
    assert sorted(order[5:]) == sorted(f"low-{i}" for i in range(30))


@pytest.mark.parametrize("budget", [0, 1, 3])
def test_always_failing_task_runs_exactly_budget_plus_one_times(app: App, budget: int):
    runs = []

    @app.task(name="flaky", retry=budget, bind=True)
    def flaky(ctx: TaskContext, x):
        runs.append((ctx.task_id, ctx.original_task_id, ctx.attempt, ctx.retries_left))
        raise ValueError(f"bad {x}")

    worker = app.start_background(concurrency=2)
    try:
        result = flaky.send(args=(7,), primary_key="pk-1")
        with pytest.raises(TaskFailed) as caught:
            result.get(timeout=10)
    finally:
        worker.stop()
    assert caught.value.error == "ValueError: bad 7"
    assert len(runs) == budget + 1
    assert [attempt for _, _, attempt, _ in runs] == list(range(1, budget + 2))
    assert [left for _, _, _, left in runs] == list(range(budget, -1, -1))
    assert len({task_id for task_id, _, _, _ in runs}) == budget + 1
    assert {original for _, original, _, _ in runs} == {result.id}
    original = result.record()
    assert original.retry == 0 and original.status is Status.FAILED
    attempts = app.backend.query(TaskQuery(limit=100)).records
    assert len(attempts) == budget + 1
    for attempt in attempts:
        assert attempt.status is Status.FAILED and attempt.fail_error == "ValueError: bad 7"
        assert (attempt.name, attempt.payload, attempt.priority, attempt.primary_key) == (
            "flaky",
            {"args": [7], "kwargs": {}},
            Priority.HIGH,
            "pk-1",
        )
    assert result.status is Status.FAILED


def test_result_follows_the_retry_chain_to_success(app: App):
    calls = []

    @app.task(name="once_bad", retry=2)
    def once_bad():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first try")
        return "second"

    worker = app.start_background(concurrency=1)
    try:
        result = once_bad.delay()
        assert result.get(timeout=10) == "second"
    finally:
        worker.stop()
    assert len(calls) == 2
    assert result.record().status is Status.FAILED  # the first attempt's own record
    assert result.status is Status.SUCCESS  # the chain's
    assert result.record().retry == 1
    latest = result.latest()
    assert latest.task_id != result.id and latest.original_task_id == result.id and latest.attempt == 2


def test_async_handlers(app: App):
    @app.task(name="fetch")
    async def fetch(url):
        await asyncio.sleep(0)
        return f"got {url}"

    @app.task(name="afail", retry=1)
    async def afail():
        raise KeyError("missing")

    worker = app.start_background(concurrency=2)
    try:
        assert fetch.delay("http://x").get(timeout=10) == "got http://x"
        with pytest.raises(TaskFailed, match="KeyError"):
            afail.delay().get(timeout=10)
    finally:
        worker.stop()


def test_unknown_task_is_failed_and_dead_lettered_and_the_worker_goes_on(app: App):
    @app.task(name="known")
    def known():
        return "ok"

    unknown = app.send_task("nobody.handles.this", args=(1,))
    worker = app.start_background(concurrency=1)
    try:
        with pytest.raises(TaskFailed, match=r"unhandled task: nobody\.handles\.this"):
            unknown.get(timeout=10)
        assert known.delay().get(timeout=10) == "ok"
    finally:
        worker.stop()
    dead = memory_broker(app).dead_letters()
    assert len(dead) == 1
    assert dead[0].headers["TaskID"] == unknown.id
    assert dead[0].headers[HEADER_DEAD_LETTER_REASON] == "unhandled task: nobody.handles.this"


def test_poison_messages_are_dead_lettered_with_reasons(app: App):
    @app.task(name="pair")
    def pair(a, b):
        return [a, b]

    broker = memory_broker(app)
    wrong_args = pair.delay(1, 2)  # recorded, then replaced below by a message whose args do not fit
    broker.queues[Priority.HIGH]["high_priority_queue_0"].clear()
    broker.put(b"{not json", {"TaskName": "pair", "TaskID": "t-bad-json"}, Priority.HIGH)
    broker.put(json.dumps({"task_id": "t-no-name", "name": "pair"}).encode(), {"TaskID": "t-no-name"}, Priority.LOW)
    body = json.dumps({"task_id": wrong_args.id, "name": "pair", "args": [1, 2, 3]}).encode()
    broker.put(body, {"TaskName": "pair", "TaskID": wrong_args.id}, Priority.HIGH)
    good = pair.delay("x", "y")
    worker = app.start_background(concurrency=2)
    try:
        assert good.get(timeout=10) == ["x", "y"]
        with pytest.raises(TaskFailed, match="arguments do not fit pair"):
            wrong_args.get(timeout=10)
        wait_until(lambda: len(broker.dead_letters()) == 3)
    finally:
        worker.stop()
    reasons = {d.headers["TaskID"]: d.headers[HEADER_DEAD_LETTER_REASON] for d in broker.dead_letters()}
    assert reasons["t-bad-json"].startswith("body is not valid JSON")
    assert reasons["t-no-name"] == "missing header TaskName"
    assert reasons[wrong_args.id].startswith("arguments do not fit pair")


def test_bad_arguments_raise_at_send_and_record_nothing(app: App):
    @app.task(name="resize")
    def resize(payload):
        return payload

    with pytest.raises(TypeError, match="argument 0 of resize is not JSON-serialisable"):
        resize.delay({1, 2})
    with pytest.raises(TypeError, match="keyword argument 'payload' of resize"):
        resize.send(kwargs={"payload": object()})
    with pytest.raises(TypeError, match="arguments do not fit resize"):
        resize.delay(1, 2)
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        resize.send(args=(1,), priority="urgent")
    with pytest.raises(ValueError, match="retry must be a non-negative integer"):
        resize.send(args=(1,), retry=-1)
    assert app.backend.query(TaskQuery()).total == 0
    assert memory_broker(app).depth() == 0


def test_concurrency_bound_and_nothing_taken_ahead():
    """Handler threads take deliveries straight from the consumer: a busy memory worker holds none
    unstarted (on RabbitMQ the broker's prefetch of concurrency + prefetch bounds what it buffers)."""
    app = App("bounds", broker="memory://", backend="memory://", prefetch=2)
    running, peak = 0, 0
    changed = threading.Condition()
    release = threading.Event()

    @app.task(name="hold")
    def hold():
        nonlocal running, peak
        with changed:
            running += 1
            peak = max(peak, running)
            changed.notify_all()
        release.wait(timeout=30)
        with changed:
            running -= 1

    results = hold.send_many([() for _ in range(40)])
    worker = app.start_background(concurrency=3)
    try:
        with changed:
            assert changed.wait_for(lambda: running == 3, timeout=10)
            assert not changed.wait_for(lambda: running > 3, timeout=0.3)
        wait_until(lambda: memory_broker(app).depth() == 40 - 3)
        with changed:  # an absence cannot be awaited: give an idle thread a chance to over-take
            changed.wait(0.2)
        assert memory_broker(app).depth() == 37
        release.set()
        for result in results:
            result.get(timeout=10)
    finally:
        release.set()
        worker.stop()
    assert peak == 3


def test_graceful_stop_finishes_running_and_gives_back_unstarted():
    app = App("stop", broker="memory://", backend="memory://", prefetch=4)
    started = threading.Semaphore(0)
    release = threading.Event()

    @app.task(name="slow")
    def slow(i):
        started.release()
        release.wait(timeout=30)
        return i

    results = slow.send_many([(i,) for i in range(10)])
    worker = app.start_background(concurrency=2)
    assert started.acquire(timeout=10) and started.acquire(timeout=10)
    wait_until(lambda: memory_broker(app).depth() == 10 - 2)
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    stopper.join(timeout=0.3)
    assert stopper.is_alive(), "stop() must wait for running handlers"
    release.set()
    stopper.join(timeout=10)
    assert not stopper.is_alive()
    statuses = [r.status for r in results]
    assert statuses.count(Status.SUCCESS) == 2
    assert statuses.count(Status.QUEUED) == 8
    assert memory_broker(app).depth() == 8
    second = app.start_background(concurrency=4)
    try:
        assert sorted(r.get(timeout=10) for r in results) == list(range(10))
    finally:
        second.stop()


def test_handler_past_the_grace_period_is_redelivered():
    app = App("grace", broker="memory://", backend="memory://", grace_period=0.1)
    entered = threading.Event()
    release = threading.Event()
    runs = []

    @app.task(name="stuck")
    def stuck():
        runs.append(1)
        entered.set()
        release.wait(timeout=30)
        return len(runs)

    result = stuck.delay()
    worker = app.start_background(concurrency=1)
    assert entered.wait(timeout=10)
    worker.stop()
    assert memory_broker(app).depth() == 1  # not acked: given back for another worker
    second = app.start_background(concurrency=1)
    try:
        wait_until(lambda: len(runs) == 2)  # at-least-once: the abandoned run is run again
        release.set()
        assert result.get(timeout=10) in (1, 2)
    finally:
        release.set()
        second.stop()
    assert len(runs) == 2


def test_redelivered_final_task_is_acked_without_running(app: App):
    runs = []

    @app.task(name="once")
    def once():
        runs.append(1)
        return "done"

    result = once.delay()
    worker = app.start_background(concurrency=1)
    try:
        assert result.get(timeout=10) == "done"
        record = result.record()
        memory_broker(app).put(
            json.dumps({"task_id": record.task_id, "name": "once", "args": [], "kwargs": {}}).encode(),
            {"TaskName": "once", "TaskID": record.task_id},
            Priority.HIGH,
        )
        wait_until(lambda: memory_broker(app).depth() == 0)
    finally:
        worker.stop()
    assert len(runs) == 1
    assert memory_broker(app).dead_letters() == []


def test_get_times_out_and_unknown_id_is_reported(app: App):
    @app.task(name="never_run")
    def never_run():
        return 1

    result = never_run.delay()
    worker = app.start_background(concurrency=1, priorities=["low"])  # runs, but never takes a high task
    try:
        with pytest.raises(TimeoutError, match="not finished"):
            result.get(timeout=0.05)
    finally:
        worker.stop()
    from cogman.errors import TaskNotFound

    with pytest.raises(TaskNotFound):
        _ = app.result("no-such-id").status


def test_get_on_memory_without_a_worker_raises_at_once_and_says_what_to_do(app: App):
    """The memory:// trap: no worker of this process, so get() would wait forever."""
    from cogman.result import NoWorker

    @app.task(name="lonely")
    def lonely() -> int:
        return 1

    result = lonely.delay()  # sending stays allowed: a test may start the worker afterwards
    with pytest.raises(NoWorker, match=r"no worker runs in this process.*app\.start_background\(\)"):
        result.get()
    worker = app.start_background(concurrency=1)
    try:
        assert result.get(timeout=10) == 1
    finally:
        worker.stop()
    assert result.get() == 1  # finished: no worker needed to read it


def test_duplicate_task_name_is_refused(app: App):
    @app.task(name="dup")
    def first():
        return 1

    with pytest.raises(ValueError, match="already registered"):

        @app.task(name="dup")
        def second():
            return 2


def test_worker_config_from_app():
    app = App("cfg", config=Config(broker_url="memory://", backend_url="memory://", concurrency=3))
    worker = app.worker(priorities=["low"])
    assert worker.concurrency == 3 and worker.prefetch == 6 and worker.priorities == (Priority.LOW,)


def test_new_high_task_overtakes_a_backlog_of_low_ones():
    """A high task sent while lows wait starts as soon as the running task ends, before any low."""
    app = App("overtake", broker="memory://", backend="memory://", prefetch=2)
    order: list[str] = []
    entered = threading.Event()
    release = threading.Event()

    @app.task(name="work")
    def work(label: str) -> None:
        order.append(label)
        if label == "low-0":
            entered.set()
            release.wait(timeout=30)

    work.send_many([(f"low-{i}",) for i in range(6)], priority="low")
    worker = app.start_background(concurrency=1)
    try:
        assert entered.wait(timeout=10)
        wait_until(lambda: memory_broker(app).depth() == 6 - 1)  # one running
        work.send(args=("high",), priority="high")
        release.set()
        wait_until(lambda: len(order) == 7)
    finally:
        release.set()
        worker.stop()
    assert order[:2] == ["low-0", "high"]
    assert sorted(order[2:]) == [f"low-{i}" for i in range(1, 6)]
