"""Re-enqueue: records still ``initiated`` after the grace period are published again, once, with their
task id and retry budget; confirmed ones never are; one bad record does not stop the others."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from cogman import App, Config, Status, TaskFailed
from cogman.backends.base import Backend, TaskQuery
from cogman.backends.memory import MemoryBackend
from cogman.backends.mongo.backend import MongoBackend
from cogman.backends.redis.backend import RedisBackend
from cogman.brokers.memory import MemoryBroker
from cogman.errors import BrokerUnavailable, PublishError
from cogman.message import Message
from cogman.middleware.base import MiddlewareStack
from cogman.record import utcnow
from cogman.sending.client import Client, LeaseKeeper
from cogman.sending.reenqueue import FROM_WORKER, period, re_enqueue
from tests.integration.rabbit_helpers import (
    ROOT,
    VHOST,
    broker_stopped,
    broker_up,
    depth,
    rabbitmqctl,
    require_rabbitmqctl,
    reset_queues,
    wait_for,
)
from tests.integration.test_backend_contract import record

CONFIG = Config(broker_url="memory://", backend_url="memory://", re_enqueue=True, re_enqueue_grace=60)


@pytest.fixture(params=["memory", "redis", "mongomock"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    made: Backend
    if request.param == "memory":
        made = MemoryBackend()
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        made = RedisBackend(url, CONFIG)
    else:
        made = MongoBackend(f"mongomock://{uuid.uuid4().hex}", CONFIG)
    yield made
    made.close()


class RecordingBroker(MemoryBroker):
    """A memory broker that can refuse chosen tasks or be away altogether."""

    def __init__(self, refuse: Sequence[str] = (), away: bool = False) -> None:
        super().__init__()
        self.refuse, self.away = set(refuse), away
        self.published: list[Message] = []

    def publish(self, messages: Sequence[Message]) -> None:
        if self.away:
            raise BrokerUnavailable("RabbitMQ has been away for too long")
        refused = [m.task_id for m in messages if m.task_id in self.refuse]
        if refused:
            raise PublishError(f"nack for {', '.join(refused)}")
        self.published += messages
        super().publish(messages)


def connect(backend: Backend, broker: MemoryBroker) -> None:
    """A client on the broker: its listener moves confirmed records to ``queued``."""
    Client(broker, backend, MiddlewareStack([]), CONFIG.with_options(re_enqueue=False))


def test_only_unconfirmed_records_older_than_the_grace_period_are_republished(backend: Backend):
    broker = RecordingBroker()
    connect(backend, broker)
    stale = [record(age=120 + i, retry=i) for i in range(3)]
    confirmed, running, young = record(age=300), record(age=300), record(age=5)
    backend.create([*stale, confirmed, running, young])
    backend.transition(confirmed.task_id, Status.QUEUED)
    backend.transition(running.task_id, Status.IN_PROGRESS)
    report = re_enqueue(backend, broker, CONFIG)
    assert sorted(report.republished) == sorted(r.task_id for r in stale)
    assert not report.failed and report.stopped is None
    by_id = {m.task_id: m for m in broker.published}
    for rec in stale:  # same task id, same budget, first attempt
        message = by_id[rec.task_id]
        assert (message.retries_left, message.attempt, message.args) == (rec.retry, 1, tuple(rec.args))
        assert backend.get(rec.task_id).status is Status.QUEUED  # type: ignore[union-attr]
    assert backend.get(young.task_id).status is Status.INITIATED  # type: ignore[union-attr]
    assert re_enqueue(backend, broker, CONFIG).republished == []  # a second pass finds nothing


def test_pages_through_many_records_and_sends_each_once(backend: Backend):
    broker = RecordingBroker()
    connect(backend, broker)
    now = utcnow()
    records = [record(age=100 + i * 0.001, now=now) for i in range(250)]
    backend.create(records)
    report = re_enqueue(backend, broker, CONFIG, page_size=40)
    assert len(report.republished) == 250 == len({m.task_id for m in broker.published}) == len(broker.published)


def test_a_record_that_cannot_be_sent_is_marked_failed_and_the_others_go(backend: Backend):
    refused, unencodable = record(age=200), record(age=200, payload={"args": [float("nan")], "kwargs": {}})
    fine = [record(age=150 + i) for i in range(3)]
    backend.create([refused, unencodable, *fine])
    broker = RecordingBroker(refuse=[refused.task_id])
    connect(backend, broker)
    report = re_enqueue(backend, broker, CONFIG)
    assert sorted(report.republished) == sorted(r.task_id for r in fine)
    assert set(report.failed) == {refused.task_id, unencodable.task_id}
    for rec, reason in ((refused, "PublishError: nack"), (unencodable, "TypeError")):
        stored = backend.get(rec.task_id)
        assert stored is not None and stored.status is Status.FAILED
        assert stored.fail_error is not None and stored.fail_error.startswith(f"re-enqueue: {reason}")


def test_a_broker_that_is_away_ends_the_pass_and_leaves_the_records_initiated(backend: Backend):
    rec = record(age=200)
    backend.create([rec])
    report = re_enqueue(backend, RecordingBroker(away=True), CONFIG)
    assert report.republished == [] and report.stopped is not None and "broker unavailable" in report.stopped
    assert backend.get(rec.task_id).status is Status.INITIATED  # type: ignore[union-attr]


def test_a_client_connecting_with_re_enqueue_runs_the_stranded_tasks(redis_url: str):
    redis.Redis.from_url(redis_url).flushdb()
    stranded = [record("stranded.add", age=10, payload={"args": [i, 1], "kwargs": {}}) for i in range(5)]
    writer = RedisBackend(redis_url, CONFIG)
    writer.create(stranded)
    writer.close()
    app = App("re-enqueue", broker="memory://", backend=redis_url, re_enqueue=True, re_enqueue_grace=1)

    @app.task(name="stranded.add")
    def add(a: int, b: int) -> int:
        return a + b

    worker = app.start_background(concurrency=2)
    try:
        assert [app.result(r.task_id).get(timeout=30) for r in stranded] == [1, 2, 3, 4, 5]
    finally:
        worker.stop()
        app.close()


@pytest.fixture
def own_vhost(rabbitmq_url: str) -> Iterator[str]:
    """A vhost of this module's own, so no other suite's consumer takes its messages; left running."""
    require_rabbitmqctl()
    vhost = f"{VHOST}_reenqueue"
    if vhost not in rabbitmqctl("list_vhosts", "--silent").split():
        rabbitmqctl("add_vhost", vhost)
    parts = urlsplit(rabbitmq_url)
    rabbitmqctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
    url = urlunsplit((parts.scheme, parts.netloc, f"/{vhost}", "", ""))
    reset_queues(url)
    yield url
    if not broker_up(url):
        rabbitmqctl("start_app")
    reset_queues(url)


SENDER = """
import sys, time
from cogman import App
app = App("re-enqueue-a", broker=sys.argv[1], backend=sys.argv[2], connection_timeout=0)
for i in range(100):
    app.send_task("reenqueue.work", args=(i,), retry=2)
print("sent", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.disruptive
def test_tasks_of_a_killed_client_run_once_in_the_next_process(own_vhost: str, redis_url: str):
    """Broker down; process A sends 100 tasks and is SIGKILLed; broker up; process B (this one, with
    re_enqueue) runs all 100, none twice."""
    rabbit = own_vhost
    server = redis.Redis.from_url(redis_url)
    server.flushdb()
    with broker_stopped(rabbit):
        sender = subprocess.Popen(
            [sys.executable, "-c", SENDER, rabbit, redis_url],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
        )
        try:
            assert sender.stdout is not None and sender.stdout.readline().strip() == b"sent"
        finally:
            os.kill(sender.pid, signal.SIGKILL)
            sender.wait(30)
    probe = RedisBackend(redis_url, CONFIG)
    stranded = probe.query(TaskQuery(status=Status.INITIATED, limit=1000))
    probe.close()
    assert stranded.total == 100 and all(r.retry == 2 for r in stranded.records)

    app = App("re-enqueue-b", broker=rabbit, backend=redis_url, re_enqueue=True, re_enqueue_grace=0)

    @app.task(name="reenqueue.work")
    def work(index: int) -> int:
        server.hincrby("test:runs", str(index), 1)
        return index

    worker = app.start_background(concurrency=8)
    try:
        backend = app.backend
        # Nothing is sent from this process: with re_enqueue on, the publisher connects by itself and the
        # connection report starts the re-enqueue pass.
        wait_for(
            lambda: backend.query(TaskQuery(status=Status.SUCCESS, limit=0)).total == 100,
            120,
            "the 100 stranded tasks to succeed",
        )
        wait_for(
            lambda: all(depth(rabbit, q) == 0 for q in ("high_priority_queue_0", "low_priority_queue_0")),
            60,
            "the queues to drain",
        )
        runs = {int(k): int(v) for k, v in server.hgetall("test:runs").items()}
        assert runs == {i: 1 for i in range(100)}
        assert worker.outcomes["skipped"] == 0  # no duplicate was even delivered
        assert backend.query(TaskQuery(status=Status.INITIATED, limit=0)).total == 0
        results = {r.task_id: r.result for r in backend.query(TaskQuery(limit=1000)).records}
        assert sorted(results.values()) == list(range(100))
    finally:
        worker.stop()
        app.close()


# Sweeps: periodic, claimed once among many sweepers, kept off records a live client still holds


def test_two_sweepers_at_once_republish_each_stale_record_once(redis_url: str):
    redis.Redis.from_url(redis_url).flushdb()
    stale = [record(age=120 + i * 0.01) for i in range(60)]
    writer = RedisBackend(redis_url, CONFIG)
    writer.create(stale)
    backends = [RedisBackend(redis_url, CONFIG) for _ in range(2)]
    brokers = [RecordingBroker(), RecordingBroker()]
    reports: list[object] = []
    go = threading.Barrier(2)

    def sweep(index: int) -> None:
        go.wait()
        reports.append(re_enqueue(backends[index], brokers[index], CONFIG, page_size=7))

    threads = [threading.Thread(target=sweep, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    published = [m.task_id for broker in brokers for m in broker.published]
    assert sorted(published) == sorted(r.task_id for r in stale)  # every one, none twice
    for made in (writer, *backends):
        made.close()


def test_a_record_held_in_a_live_clients_outbox_is_not_swept(backend: Backend):
    """A long broker outage: the client still holds the message and renews its lease, so a sweep leaves
    the record to it instead of publishing it a second time."""
    held, stranded = record(age=300), record(age=300)
    backend.create([held, stranded])

    class HoldingBroker(RecordingBroker):
        def unconfirmed_ids(self) -> list[str]:
            return [held.task_id]

    keeper = LeaseKeeper(HoldingBroker(), backend, grace=0.3)
    try:
        # The keeper renews within a third of its grace: from then on, no claim takes the held record.
        wait_for(lambda: backend.claim_stale([held.task_id], 0.001) == [], 10, "the client's lease")
        broker = RecordingBroker()
        report = re_enqueue(backend, broker, CONFIG.with_options(re_enqueue_grace=60))
        assert report.republished == [stranded.task_id]
    finally:
        keeper.stop()


def test_a_worker_sweeps_on_its_own_without_any_reconnect(redis_url: str):
    """Records left unconfirmed by a crashed client, written after the worker started, are published by
    the worker's periodic sweep; the old re-enqueue only ran when a client (re)connected."""
    redis.Redis.from_url(redis_url).flushdb()
    app = App("sweeps", broker="memory://", backend=redis_url, re_enqueue_grace=1, re_enqueue_interval=0.2)
    done: list[int] = []

    @app.task(name="sweeps.add")
    def add(a: int, b: int) -> int:
        done.append(a)
        return a + b

    worker = app.start_background(concurrency=2)
    try:
        assert worker._sweeper is not None  # on by default: the backend outlives the process
        wait_for(lambda: worker._sweeper is not None and worker._sweeper.passes >= 1, 10, "the first sweep")
        stranded = [record("sweeps.add", age=5, payload={"args": [i, 1], "kwargs": {}}) for i in range(5)]
        writer = RedisBackend(redis_url, CONFIG)
        writer.create(stranded)
        writer.close()
        assert [app.result(r.task_id).get(timeout=30) for r in stranded] == [1, 2, 3, 4, 5]
        assert sorted(done) == [0, 1, 2, 3, 4]
    finally:
        worker.stop()
        app.close()


def test_retry_attempts_left_unconfirmed_are_swept_too(backend: Backend):
    original = record(age=300, retry=1)
    backend.create([original])
    attempt = original.evolve(task_id="retry-of-" + original.task_id, status=Status.RETRY, attempt=2, retry=0)
    assert backend.spawn_retry(original.task_id, attempt) == 0
    broker = RecordingBroker()
    connect(backend, broker)
    report = re_enqueue(backend, broker, CONFIG, now=utcnow() + timedelta(seconds=120))
    assert attempt.task_id in report.republished
    assert backend.get(attempt.task_id).status is Status.QUEUED  # type: ignore[union-attr]


def test_a_backend_outage_while_reading_a_retrys_budget_leaves_the_retry_for_the_next_sweep():
    """A retry attempt's budget is read from its original; a backend that fails that read is an outage
    (the pass stops, the record stays ``retry``), not a reason to fail a good retry for good."""
    from cogman.errors import BackendUnavailable

    class Flickering(MemoryBackend):
        def get(self, task_id: str):  # type: ignore[no-untyped-def]
            raise BackendUnavailable("Redis unreachable while trying to read")

    backend = Flickering()
    original = record(age=300, status=Status.FAILED)
    attempt = original.evolve(task_id=str(uuid.uuid4()), status=Status.RETRY, attempt=2)
    backend.create([original, attempt])
    report = re_enqueue(backend, RecordingBroker(), CONFIG)
    assert report.failed == {} and report.stopped is not None and "backend unavailable" in report.stopped
    assert backend._records[attempt.task_id].status is Status.RETRY


# Children a handler sent, left unpublished by a time limit or a killed worker: swept after the child grace


def test_a_record_sent_from_inside_a_handler_is_swept_after_the_shorter_child_grace(backend: Backend):
    """Both are 20 s old and unconfirmed: the child (sent from a handler) is past the child grace (10 s),
    the client's record is within the grace (60 s)."""
    child = record(age=20, payload={"args": [1], "kwargs": {}, FROM_WORKER: True})
    sent_by_a_client = record(age=20)
    backend.create([child, sent_by_a_client])
    broker = RecordingBroker()
    connect(backend, broker)
    report = re_enqueue(backend, broker, CONFIG.with_options(re_enqueue_child_grace=10))
    assert report.republished == [child.task_id]
    assert backend.get(sent_by_a_client.task_id).status is Status.INITIATED  # type: ignore[union-attr]
    assert period(CONFIG.with_options(re_enqueue_child_grace=10, re_enqueue_interval=30)) == 10
    assert period(CONFIG.with_options(re_enqueue_child_grace=120, re_enqueue_interval=30)) == 30


def test_a_child_whose_send_a_time_limit_cut_short_runs_soon(redis_url: str):
    """The parent's time limit fires while its child is recorded but not yet published (the interrupt lands
    in the publish, held there in a Python loop): the child's record stays ``initiated`` with no message,
    and the worker's sweep sends it after the child grace (1 s here), not the grace (60 s)."""
    redis.Redis.from_url(redis_url).flushdb()
    app = App("children", broker="memory://", backend=redis_url, re_enqueue_grace=60, re_enqueue_child_grace=1)
    ran: list[int] = []

    @app.task(name="children.child")
    def child(x: int) -> int:
        ran.append(x)
        return x

    @app.task(name="children.parent", time_limit=0.5)
    def parent() -> None:
        child.delay(7)

    @app.task(name="children.async_parent")
    async def async_parent() -> str:
        return child.delay(8).id

    real_publish = app.broker.publish
    held: list[str] = []

    def publish_held_once(messages: Sequence[Message], *args: object, **kwargs: object) -> object:
        if not held and any(m.name == "children.child" for m in messages):
            held.append(messages[0].task_id)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # pure Python: the time limit's interrupt lands here
                pass
        return real_publish(messages, *args, **kwargs)  # type: ignore[arg-type]

    app.broker.publish = publish_held_once  # type: ignore[method-assign]
    worker = app.start_background(concurrency=2)
    try:
        sent = parent.delay()
        with pytest.raises(TaskFailed, match="time limit exceeded"):
            sent.get(timeout=30)
        [child_id] = held
        stranded = app.backend.get(child_id)
        assert stranded is not None and stranded.payload[FROM_WORKER] is True
        assert app.result(child_id).get(timeout=30) == 7  # the sweep sent it: 60 s had not passed
        assert ran == [7]
        assert FROM_WORKER not in (sent.record().payload)  # sent by the test's thread, not a handler
        from_loop = async_parent.delay().get(timeout=30)
        assert app.backend.get(from_loop).payload[FROM_WORKER] is True  # type: ignore[union-attr]
    finally:
        worker.stop()
        app.close()


def test_a_child_held_in_a_live_workers_outbox_is_not_swept_after_the_child_grace(backend: Backend):
    """The lease keeper renews every third of the child grace (not of the grace), so a child the outbox
    holds through a broker outage keeps its lease before a sweep may take it."""
    held = record(age=20, payload={"args": [], "kwargs": {}, FROM_WORKER: True})
    backend.create([held])

    class HoldingBroker(RecordingBroker):
        def unconfirmed_ids(self) -> list[str]:
            return [held.task_id]

    keeper = LeaseKeeper(HoldingBroker(), backend, grace=60, shortest=0.3)
    try:
        wait_for(lambda: backend.claim_stale([held.task_id], 0.001) == [], 10, "the worker's lease")
        report = re_enqueue(backend, RecordingBroker(), CONFIG.with_options(re_enqueue_child_grace=10))
        assert report.republished == []
    finally:
        keeper.stop()
