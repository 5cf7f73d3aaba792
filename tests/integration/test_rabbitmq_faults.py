"""Fault scenarios against the real RabbitMQ, each with exact counts (docs/reliability.md quotes them):

2. broker restart while a client sends 2,000 tasks and a worker runs them;
3. SIGKILL of a worker process while 2,000 tasks run, a second worker finishes;
4. a client (and a worker) started while the broker is down: the outbox, then everything runs, in order;
   and past connection_timeout: sends fail loudly and the outbox's tasks are recorded failed;
5. poison messages of each kind land in cogman.dead_letter while the good ones run;
6. priority: 1,000 low tasks queued, then 20 high: the high ones start before the low backlog drains.
Plus ``--processes``: one command runs several worker processes.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kombu import Connection

from cogman import App, Status
from cogman.brokers.base import HEADER_DEAD_LETTER_REASON
from cogman.errors import BrokerUnavailable
from cogman.priority import Priority
from cogman.sending.client import new_record
from cogman.worker.execution import Outcome
from tests.integration.rabbit_app import read_runs
from tests.integration.rabbit_helpers import (
    CountingLoad,
    broker_stopped,
    consumer_count,
    depth,
    figures,
    wait_for,
    worker_process,
)
from tests.integration.redis_helpers import drop_prefix

pytestmark = pytest.mark.slow

TASKS = 2000


def statuses(app: App, results: list) -> Counter[Status]:
    return Counter(app.backend.get(r.id).status for r in results)


def all_succeeded(app: App, results: list) -> bool:
    return statuses(app, results) == Counter({Status.SUCCESS: len(results)})


# Scenario 2: broker restart while sending and running


@pytest.mark.disruptive
def test_broker_restart_while_sending_and_running(rabbit: str, rabbit_app: Callable[..., App]):
    app = rabbit_app(connection_timeout=0)
    load = CountingLoad(app, "faults.count", TASKS, mark=TASKS // 4)
    runs, results, sender = load.runs, load.results, load.sender
    worker = app.start_background(concurrency=4)
    consumer = worker._consumer
    sender.start()
    try:
        assert load.marked.wait(60)
        with broker_stopped(rabbit):
            # sends keep returning while the broker is away: they land in the outbox
            wait_for(lambda: len(results) >= TASKS // 2, 60, "sends to go on into the outbox")
        sender.join(120)
        wait_for(lambda: len(runs) == TASKS, 120, f"all {TASKS} tasks to run after the restart")
        wait_for(lambda: all_succeeded(app, results), 60, "every record to be success")
    finally:
        sender.join(120)
        worker.stop()

    duplicated = load.duplicated
    figures(
        "broker restart", sent=TASKS, succeeded=statuses(app, results)[Status.SUCCESS], lost=TASKS - len(runs),
        duplicated=duplicated, worker_reconnects=getattr(consumer, "reconnects", None),
        skipped_redeliveries=worker.outcomes[Outcome.SKIPPED],
    )  # fmt: skip
    assert len(results) == TASKS
    assert sorted(runs) == list(range(TASKS))  # none lost
    assert statuses(app, results) == Counter({Status.SUCCESS: TASKS})
    assert getattr(consumer, "reconnects", 0) >= 1  # it consumed again by itself
    assert app.broker.pending() == 0  # type: ignore[attr-defined]


# Scenario 4: started while the broker is down; connection_timeout


@pytest.mark.disruptive
def test_client_and_worker_started_while_broker_is_down(rabbit: str, rabbit_app: Callable[..., App]):
    app = rabbit_app()
    order: list[int] = []

    @app.task(name="faults.ordered")
    def ordered(index: int) -> None:
        order.append(index)

    with broker_stopped(rabbit):
        results = [ordered.delay(index) for index in range(200)]  # no raise, no wait: into the outbox
        assert statuses(app, results) == Counter({Status.INITIATED: 200})
        assert app.broker.pending() == 200  # type: ignore[attr-defined]
        worker = app.start_background(concurrency=1)  # a worker can start while the broker is away too
    try:
        wait_for(lambda: all_succeeded(app, results), 120, "the outbox to be flushed and run")
    finally:
        worker.stop()

    figures("client started while broker down", sent=200, succeeded=200, lost=200 - len(set(order)),
            duplicated=len(order) - len(set(order)))  # fmt: skip
    assert order == list(range(200))  # each once, in send order
    assert app.broker.pending() == 0  # type: ignore[attr-defined]


@pytest.mark.disruptive
def test_past_connection_timeout_sends_fail_loudly_and_nothing_is_dropped(rabbit: str, rabbit_app: Callable[..., App]):
    app = rabbit_app(connection_timeout=1.0, request_timeout=1.0)

    @app.task(name="faults.later")
    def later(index: int) -> int:
        return index

    with broker_stopped(rabbit):
        parked = [later.delay(index) for index in range(5)]
        wait_for(lambda: statuses(app, parked) == Counter({Status.FAILED: 5}), 60, "outbox tasks recorded failed")
        with pytest.raises(BrokerUnavailable, match="connection_timeout"):
            later.delay(99)
    reasons = {app.backend.get(r.id).fail_error for r in parked}
    assert len(reasons) == 1 and "connection_timeout=1s" in reasons.pop()  # type: ignore[operator]

    sent: list = []

    def can_send() -> bool:
        try:
            sent.append(later.delay(7))
            return True
        except BrokerUnavailable:
            return False

    wait_for(can_send, 60, "the client to reconnect by itself", interval=0.5)
    worker = app.start_background(concurrency=2)
    try:
        assert sent[-1].get(timeout=30) == 7
    finally:
        worker.stop()


# Scenario 5: poison messages


def test_poison_messages_are_dead_lettered_and_good_ones_run(rabbit: str, rabbit_app: Callable[..., App]):
    app = rabbit_app()

    @app.task(name="faults.good")
    def good(index: int) -> int:
        return index

    @app.task(name="faults.typed")
    def typed(a: int, b: int) -> int:
        return a + b

    before = app.send_many("faults.good", [((i,), {}) for i in range(10)])  # also declares the queues
    unknown = app.send_task("faults.nobody", args=(1,))
    bad_args = new_record("faults.typed", (1, 2, 3), {}, priority=Priority.HIGH, retry=2, primary_key=None)
    app.client.send([bad_args])  # as a client without the function would: nothing checks the arguments
    some_id = str(uuid.uuid4())
    raw = [  # (body, headers) as a foreign or broken producer would send them
        (b"{not json", {"TaskName": "faults.good", "TaskID": some_id}),
        (b"\xff\xfe\x00", {"TaskName": "faults.good", "TaskID": str(uuid.uuid4())}),
        (b'{"task_id":"x","name":"faults.good","args":[1]}', {"TaskName": "faults.good"}),
        (b'{"task_id":"y","name":"faults.good","args":[1]}', {"TaskID": "y"}),
    ]
    with Connection(rabbit) as connection:
        producer = connection.Producer()
        for body, headers in raw:
            producer.publish(body, routing_key="high_priority_queue_0", headers=headers, delivery_mode=2,
                             content_type="application/json", content_encoding="binary")  # fmt: skip
    after = app.send_many("faults.good", [((i,), {}) for i in range(10, 20)])

    worker = app.start_background(concurrency=2)
    try:
        wait_for(lambda: all_succeeded(app, before + after), 60, "the 20 good tasks")
        wait_for(lambda: worker.outcomes[Outcome.DEAD_LETTERED] == 6, 60, "6 dead-lettered messages")
    finally:
        worker.stop()

    letters = app.broker.dead_letters()
    reasons = sorted(letter.headers[HEADER_DEAD_LETTER_REASON].split(":")[0] for letter in letters)
    figures("poison", sent=26, good_succeeded=20, dead_lettered=len(letters), lost=0)
    assert len(letters) == 6
    assert reasons == [
        "arguments do not fit faults.typed",
        "body is not valid JSON",
        "body is not valid JSON",
        "missing header TaskID",
        "missing header TaskName",
        "unhandled task",
    ]
    assert depth(rabbit, "high_priority_queue_0") == 0  # acked from the source: no requeue loop
    assert app.backend.get(unknown.id).status is Status.FAILED
    assert app.backend.get(unknown.id).fail_error == "unhandled task: faults.nobody"
    assert app.backend.get(bad_args.task_id).status is Status.FAILED
    assert worker.outcomes[Outcome.SUCCEEDED] == 20


# Scenario 6: priority


def test_high_tasks_start_before_a_low_backlog_drains(rabbit_app: Callable[..., App]):
    app = rabbit_app()
    starts: list[tuple[str, int]] = []
    lock = threading.Lock()

    @app.task(name="faults.low", priority="low")
    def low(index: int) -> None:
        with lock:
            starts.append(("low", index))
        time.sleep(0.005)

    @app.task(name="faults.high")
    def high(index: int) -> None:
        with lock:
            starts.append(("high", index))

    app.send_many("faults.low", [((i,), {}) for i in range(1000)])
    worker = app.start_background(concurrency=2)
    try:
        wait_for(lambda: len(starts) >= 20, 60, "the low backlog to start running")
        app.send_many("faults.high", [((i,), {}) for i in range(20)])
        with lock:
            started_before_high = len(starts)  # the highs are in their queue now (confirmed)
        wait_for(lambda: len(starts) == 1020, 120, "all 1,020 tasks")
    finally:
        worker.stop()

    last_high = max(i for i, (kind, _) in enumerate(starts) if kind == "high")
    lows_in_between = sum(1 for kind, _ in starts[started_before_high:last_high] if kind == "low")
    low_left = sum(1 for kind, _ in starts[last_high:] if kind == "low")
    figures("priority", low_sent=1000, high_sent=20, lows_started_while_highs_waited=lows_in_between,
            lows_still_waiting_when_last_high_started=low_left)  # fmt: skip
    assert Counter(kind for kind, _ in starts) == Counter({"low": 1000, "high": 20})
    # A handler takes a buffered high before any low, so lows start meanwhile only while no high is in the
    # consumer's buffer yet (in flight from RabbitMQ, or refilling its prefetch window as highs are acked).
    # In first-in-first-out order the 20 highs would wait behind the whole backlog; here fewer lows than
    # highs slip in between, and nearly all of the backlog is still waiting when the last high starts.
    assert lows_in_between < 20
    assert low_left >= 1000 - started_before_high - 20


# Scenario 3 and --processes: worker processes sharing RabbitMQ and Redis


@pytest.fixture
def shared(rabbit: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[App, dict[str, str], Path]]:
    """A client app and the environment for worker processes: same vhost, same Redis key prefix."""
    prefix = f"cogman-test-{uuid.uuid4().hex[:8]}"
    env = {
        "COGMAN_BROKER_URL": rabbit,
        "COGMAN_BACKEND_URL": redis_url,
        "COGMAN_TEST_PREFIX": prefix,
        "COGMAN_TEST_RUN_LOG": str(tmp_path / "runs.log"),
    }
    client = App("faults-client", broker=rabbit, backend=redis_url, redis_prefix=prefix)
    yield client, env, tmp_path
    client.close()
    drop_prefix(redis_url, prefix)


def test_sigkill_of_a_worker_process_loses_nothing(rabbit: str, shared: tuple[App, dict[str, str], Path]):
    client, env, tmp = shared
    log = env["COGMAN_TEST_RUN_LOG"]
    results = client.send_many("faults.work", [((i, 0.004), {}) for i in range(TASKS)])
    victim = worker_process("tests.integration.rabbit_app", env, "-c", "4", log=tmp / "victim.log")
    survivor = worker_process("tests.integration.rabbit_app", env, "-c", "4", log=tmp / "survivor.log")
    try:
        wait_for(lambda: len({pid for _, pid in read_runs(log)}) == 2 and len(read_runs(log)) >= 400, 60,
                 "both workers to be running tasks")  # fmt: skip
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(30) == -signal.SIGKILL
        wait_for(lambda: len({i for i, _ in read_runs(log)}) == TASKS, 120, "the survivor to run every task")
        wait_for(lambda: all_succeeded(client, results), 60, "every record to be success", interval=0.5)
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        assert survivor.wait(60) == 0  # a graceful stop

    runs = read_runs(log)
    ran = Counter(i for i, _ in runs)
    by_victim = {pid for _, pid in runs} - {survivor.pid}
    figures("sigkill of a worker process", sent=TASKS, succeeded=statuses(client, results)[Status.SUCCESS],
            lost=TASKS - len(ran), duplicated=sum(n - 1 for n in ran.values()),
            run_by_killed=sum(1 for _, pid in runs if pid in by_victim))  # fmt: skip
    assert sorted(ran) == list(range(TASKS))
    assert statuses(client, results) == Counter({Status.SUCCESS: TASKS})
    assert depth(rabbit, "high_priority_queue_0") == 0


def test_processes_flag_runs_several_worker_processes(rabbit: str, shared: tuple[App, dict[str, str], Path]):
    client, env, tmp = shared
    log = env["COGMAN_TEST_RUN_LOG"]
    client.send_task("faults.work", args=(-1,))  # declares the queues before the workers look
    parent = worker_process("tests.integration.rabbit_app", env, "--processes", "2", "-c", "2",
                            log=tmp / "processes.log")  # fmt: skip
    try:
        wait_for(lambda: consumer_count(rabbit, "high_priority_queue_0") == 2, 60, "two consuming processes")
        results = client.send_many("faults.work", [((i, 0.01), {}) for i in range(200)])
        wait_for(lambda: all_succeeded(client, results), 60, "200 tasks", interval=0.5)
    finally:
        parent.send_signal(signal.SIGTERM)
        code = parent.wait(60)
    pids = {pid for i, pid in read_runs(log) if i >= 0}
    assert code == 0
    assert len(pids) == 2 and parent.pid not in pids
    wait_for(lambda: consumer_count(rabbit, "high_priority_queue_0") == 0, 30, "the children to be gone")
