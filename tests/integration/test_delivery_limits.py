"""No task loops forever (issue 21): a task that kills its worker process each time it runs is run
``max_redeliveries + 1`` times, then recorded ``failed`` with the reason and dead-lettered once.

The RabbitMQ tests run real ``cogman worker`` processes, on classic and on quorum queues, and start a
new one after each death (a bounded loop). The memory tests show the counting itself: the starts the
backend counts, and the worker's refusal once they are over the limit.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

from cogman import App, Status
from cogman.backends.base import Backend
from cogman.backends.memory import MemoryBackend
from cogman.backends.mongo.backend import MongoBackend
from cogman.backends.redis.backend import RedisBackend
from cogman.brokers.base import DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON, queue_names
from cogman.config.settings import Config
from cogman.message import HEADER_TASK_ID
from cogman.priority import Priority
from cogman.record import TaskRecord
from tests.integration.rabbit_helpers import depth, list_queues, wait_for, worker_process
from tests.integration.redis_helpers import drop_prefix

APP = "tests.integration.delivery_limits_app"
LIMIT = 2  #: max_redeliveries of these tests: 3 runs, then the 4th delivery is refused
REASON = f"started {LIMIT + 1} times without an outcome: its worker died each time"


def run_count(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


@pytest.fixture
def env(worker_env: dict[str, str]) -> dict[str, str]:
    return {**worker_env, "COGMAN_MAX_REDELIVERIES": str(LIMIT)}


def client_for(env: dict[str, str], queue_type: str) -> App:
    return App("limits-client", broker=env["COGMAN_BROKER_URL"], backend=env["COGMAN_BACKEND_URL"],
               redis_prefix=env["COGMAN_TEST_PREFIX"], queue_type=queue_type, max_redeliveries=LIMIT)  # fmt: skip


def final(client: App, task_id: str) -> bool:
    record = client.backend.get(task_id)
    return record is not None and record.status.is_final


def run_until_final(client: App, env: dict[str, str], task_id: str, tmp_path: Path, most: int) -> int:
    """Start a worker, and a new one each time one dies, until the record is final; at most ``most``
    workers. Returns how many died."""
    deaths = 0
    for number in range(most):
        worker = worker_process(APP, env, "-c", "1", log=tmp_path / f"worker{number}.log")
        try:
            wait_for(lambda w=worker: w.poll() is not None or final(client, task_id), 60, "a death or an outcome")
        finally:
            if worker.poll() is None:  # the task ended: the worker lives; stop it gracefully
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
        if worker.returncode == -signal.SIGKILL:
            deaths += 1
        if final(client, task_id):
            return deaths
    raise AssertionError(f"task {task_id} still not final after {most} workers ({deaths} died)")


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_task_that_kills_its_worker_each_time_ends_failed_and_dead_lettered_once(
    env: dict[str, str], queue_type: str, tmp_path: Path
):
    env = {**env, "COGMAN_QUEUE_TYPE": queue_type}
    client = client_for(env, queue_type)
    try:
        begun = time.monotonic()
        result = client.send_task("limits.kills_worker")
        deaths = run_until_final(client, env, result.id, tmp_path, most=LIMIT + 4)
        took = time.monotonic() - begun
        record = client.backend.get(result.id)
        dead = client.broker.dead_letters()
    finally:
        client.close()
    assert (deaths, run_count(tmp_path / "runs.log")) == (LIMIT + 1, LIMIT + 1)
    assert record is not None and record.status is Status.FAILED
    assert record.fail_error is not None and record.fail_error.startswith(REASON)
    assert [(d.headers[HEADER_TASK_ID], d.headers[HEADER_DEAD_LETTER_REASON]) for d in dead] == [
        (result.id, record.fail_error)
    ]
    rabbit = env["COGMAN_BROKER_URL"]
    assert depth(rabbit, DEAD_LETTER_QUEUE) == 1
    assert [depth(rabbit, name) for name in queue_names(Priority.HIGH, 1) + queue_names(Priority.LOW, 1)] == [0, 0]
    print(f"\n[figures] {queue_type}: {deaths} worker deaths, then failed and dead-lettered, in {took:.1f} s")


def test_a_go_format_task_that_kills_its_worker_each_time_ends_failed_and_dead_lettered_once(
    env: dict[str, str], tmp_path: Path
):
    """Go's record has no field to count starts in: they are counted beside it (``GoRecords.start``)."""
    client = client_for(env, "classic")
    try:
        task = client.task(name="limits.go_kills_worker", wire="go")(lambda payload: None)
        result = task.delay(b"\x00go payload")
        deaths = run_until_final(client, env, result.id, tmp_path, most=LIMIT + 4)
        go_record = client.backend.go_records().get(result.id)
        dead = client.broker.dead_letters()
    finally:
        client.close()
    assert (deaths, run_count(tmp_path / "runs.log")) == (LIMIT + 1, LIMIT + 1)
    assert go_record is not None and go_record.status is Status.FAILED
    assert go_record.fail_error.startswith(REASON)
    assert [(d.headers[HEADER_TASK_ID], d.headers[HEADER_DEAD_LETTER_REASON]) for d in dead] == [
        (result.id, go_record.fail_error)
    ]
    assert depth(env["COGMAN_BROKER_URL"], DEAD_LETTER_QUEUE) == 1


def test_quorum_task_queues_carry_the_delivery_limit_and_dead_letter_into_cogmans_place(env: dict[str, str]):
    """Past ``x-delivery-limit`` RabbitMQ drops a message unless the queue dead-letters it."""
    client = client_for(env, "quorum")
    try:
        client.send_task("limits.kills_worker_once").wait_sent(30)
    finally:
        client.close()
    arguments = {name: queue["arguments"] for name, queue in list_queues().items()}
    expected = {
        "x-queue-type": "quorum",
        "x-delivery-limit": LIMIT + 1,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    for name in queue_names(Priority.HIGH, 1) + queue_names(Priority.LOW, 1):
        assert arguments[name] == expected
    assert arguments[DEAD_LETTER_QUEUE] == {"x-queue-type": "quorum"}


def test_on_quorum_a_message_returned_unstarted_too_often_is_failed_and_dead_lettered(env: dict[str, str]):
    """RabbitMQ counts every return on a quorum queue (``x-delivery-count``), started or not: here three
    consumers take the message and close their channel without an ack or a start."""
    client = client_for(env, "quorum")
    runs: list[int] = []

    @client.task(name="limits.unstarted")
    def unstarted() -> None:
        runs.append(1)

    try:
        result = unstarted.delay()
        result.wait_sent(30)
        (queue,) = queue_names(Priority.HIGH, 1)
        for _ in range(LIMIT + 1):
            with Connection(env["COGMAN_BROKER_URL"], connect_timeout=5) as connection:
                channel = connection.channel()
                assert channel.basic_get(queue, no_ack=False) is not None  # closed unacked: returned
        worker = client.start_background(concurrency=1)
        try:
            record = client.backend.wait(result.id, timeout=30)
        finally:
            worker.stop()
        dead = client.broker.dead_letters()
    finally:
        client.close()
    reason = f"delivered {LIMIT + 1} times without an outcome (x-delivery-count)"
    assert record is not None and record.status is Status.FAILED
    assert record.fail_error is not None and record.fail_error.startswith(reason)
    assert [d.headers[HEADER_DEAD_LETTER_REASON] for d in dead] == [record.fail_error]
    assert runs == []


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_task_whose_worker_died_once_still_runs_to_success(env: dict[str, str], queue_type: str, tmp_path: Path):
    env = {**env, "COGMAN_QUEUE_TYPE": queue_type}
    client = client_for(env, queue_type)
    try:
        result = client.send_task("limits.kills_worker_once")
        deaths = run_until_final(client, env, result.id, tmp_path, most=3)
        assert result.get(timeout=10) == "survived"
        dead = client.broker.dead_letters()
    finally:
        client.close()
    assert (deaths, run_count(tmp_path / "runs.log"), dead) == (1, 2, [])


# The counting, without processes: the backend's starts, and the worker's refusal on memory://


@pytest.fixture(params=["memory", "redis", "mongomock"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    if request.param == "mongomock":
        database = f"cogman_limits_{uuid.uuid4().hex[:8]}"
        mongo = MongoBackend(f"mongomock://{database}", Config(mongo_database=database))
        yield mongo
        mongo.client.drop_database(database)
        mongo.close()
        return
    redis_url = request.getfixturevalue("redis_url")
    prefix = f"cogman-test-{uuid.uuid4().hex[:8]}"
    redis_backend = RedisBackend(redis_url, Config(redis_prefix=prefix))
    yield redis_backend
    redis_backend.close()
    drop_prefix(redis_url, prefix)


def test_the_backend_counts_each_start_until_the_record_is_final(backend: Backend):
    backend.create([TaskRecord("t1", "limits.anything", "t1", Priority.HIGH, {"args": [], "kwargs": {}})])
    counted = [backend.start("t1") for _ in range(3)]
    assert [(s.status, s.starts) for s in counted if s is not None] == [(Status.IN_PROGRESS, n) for n in (1, 2, 3)]
    backend.transition("t1", Status.SUCCESS, result=1, returning=False)
    again = backend.start("t1")
    assert again is not None and (again.status, again.starts) == (Status.SUCCESS, 1)


def test_a_start_written_again_for_the_same_delivery_counts_once(backend: Backend):
    """A WAIT shortfall or an outage makes the worker write a delivery's start again (retried, parked,
    replayed): counted per call, a few such retries dead-lettered healthy tasks in a Sentinel failover
    (1,729 of 5,000 in one run). The delivery's token makes them one start; a new delivery counts anew."""
    backend.create([TaskRecord("t2", "limits.anything", "t2", Priority.HIGH, {"args": [], "kwargs": {}})])
    first = [backend.start("t2", "delivery-1") for _ in range(4)]
    assert [s.starts for s in first if s is not None] == [1, 1, 1, 1]
    second = [backend.start("t2", "delivery-2") for _ in range(2)]
    assert [s.starts for s in second if s is not None] == [2, 2]
    assert backend.start("t2", "delivery-1").starts == 3  # type: ignore[union-attr]  # an older token: new


def test_on_memory_a_task_started_too_often_is_failed_and_dead_lettered_unrun():
    """Three earlier starts (as three dead workers would leave them) with ``max_redeliveries=2``: the
    fourth delivery is not run. (Its message is a copy, sent with the task's id: a first delivery, which
    cannot have been started before, does not wait for its start: worker/first_run.py.)"""
    app = App("limits", broker="memory://", backend="memory://", max_redeliveries=LIMIT)
    runs: list[int] = []

    @app.task(name="limits.counted")
    def counted() -> None:
        runs.append(1)

    try:
        result = app.send_task("limits.counted", task_id="limits-counted")
        for _ in range(LIMIT + 1):
            app.backend.start(result.id)
        worker = app.start_background(concurrency=1)
        try:
            record = app.backend.wait(result.id, timeout=10)
        finally:
            worker.stop()
        dead = app.broker.dead_letters()
    finally:
        app.close()
    assert runs == []
    assert record is not None and record.status is Status.FAILED
    assert record.fail_error is not None and record.fail_error.startswith(REASON)
    assert [d.headers[HEADER_DEAD_LETTER_REASON] for d in dead] == [record.fail_error]
