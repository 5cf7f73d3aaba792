"""Publishing edge cases against the real RabbitMQ (issue 7, items 1-4), each with its figures line:

1. a message RabbitMQ refuses (406 over its max_message_size, 403 no write permission) fails alone, with
   RabbitMQ's reason, and the publisher carries on;
2. a refused login or vhost fails the first send at once; a refusal met while reconnecting abandons the
   outbox with the reason instead of looping;
3. close() (and interpreter exit) drains the outbox, waiting up to close_timeout for RabbitMQ;
4. no send hangs under a RabbitMQ alarm (connection.blocked), and the outbox is bounded.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
from kombu import Connection

from cogman import App, Status, TaskFailed
from cogman.backends.base import Backend, TaskQuery
from cogman.brokers.rabbitmq.broker import RabbitMQBroker
from cogman.brokers.rabbitmq.publisher_state import Phase
from cogman.brokers.rabbitmq.topology import Topology
from cogman.errors import BrokerAccessRefused, BrokerUnavailable, PublishError
from cogman.message import Message
from cogman.priority import Priority
from cogman.sending.client import new_record
from tests.integration.rabbit_helpers import ROOT, VHOST, depth, figures, rabbitmqctl, wait_for
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


@pytest.fixture
def rabbit_user(rabbit: str) -> Iterator[Callable[..., str]]:
    """``rabbit_user(name, password, write=".*")``: a RabbitMQ user on the test vhost; its AMQP URL.
    Deleted afterwards (names carry the vhost, so concurrent suites never share one)."""
    made: list[str] = []

    def make(name: str, password: str, write: str = ".*") -> str:
        user = f"{VHOST}_{name}"
        rabbitmqctl("delete_user", user, check=False)
        rabbitmqctl("add_user", user, password)
        made.append(user)
        rabbitmqctl("set_permissions", "-p", VHOST, user, ".*", write, ".*")
        host = rabbit.split("@", 1)[1]
        return f"amqp://{quote(user)}:{quote(password)}@{host}"

    yield make
    for user in made:
        rabbitmqctl("delete_user", user, check=False)


def records(backend: Backend) -> list:
    return backend.query(TaskQuery(limit=1000)).records


def statuses(backend: Backend, ids: list[str] | None = None) -> Counter[Status]:
    chosen = [r for r in records(backend) if ids is None or r.task_id in ids]
    return Counter(r.status for r in chosen)


def erlang(expression: str) -> str:
    return rabbitmqctl("eval", expression).strip()


def counting_sends(app: App) -> Counter[str]:
    """How often the publisher put each task id on the wire (wraps the link's send; a send that raised
    before writing, as py-amqp does when it reads a pending channel close first, does not count)."""
    link = app.broker.publisher.link  # type: ignore[attr-defined]
    sent: Counter[str] = Counter()
    original = link.send

    def send(entry):  # type: ignore[no-untyped-def]
        tag = original(entry)
        sent[entry.message.task_id] += 1
        return tag

    link.send = send
    return sent


# 1. A refused message fails alone


@pytest.mark.disruptive
def test_message_over_rabbitmqs_size_limit_fails_alone(rabbit: str, rabbit_app: Callable[..., App]):
    app = rabbit_app(send_mode="confirmed")
    runs: Counter[int] = Counter()

    @app.task(name="publishing.echo")
    def echo(index: int, padding: str = "") -> int:
        runs[index] += 1
        return index

    sends = counting_sends(app)
    previous = erlang("application:get_env(rabbit, max_message_size).")  # {ok,134217728}
    assert previous.startswith("{ok,"), previous
    erlang("application:set_env(rabbit, max_message_size, 4096).")  # read by channels opened from now on
    try:
        assert echo.delay(-1).status is Status.QUEUED
        calls = [((i,), {}) for i in range(3)] + [((3,), {"padding": "x" * 5000})] + [((i,), {}) for i in range(4, 7)]
        started = time.monotonic()
        with pytest.raises(PublishError, match=r"PRECONDITION_FAILED - message size \d+ is larger than configured"):
            app.send_many("publishing.echo", calls)
        recover_s = time.monotonic() - started
        later = echo.delay(7)  # not stuck behind the refused one
        assert later.status is Status.QUEUED
    finally:
        erlang(f"application:set_env(rabbit, max_message_size, {previous[4:-1]}).")

    by_index = {r.payload["args"][0]: r for r in records(app.backend)}
    assert by_index[3].status is Status.FAILED
    assert "not published: RabbitMQ refused the message" in str(by_index[3].fail_error)
    assert "message size" in str(by_index[3].fail_error)
    assert {i: r.status for i, r in by_index.items() if i != 3} == dict.fromkeys(
        [-1, 0, 1, 2, 4, 5, 6, 7], Status.QUEUED
    )
    assert app.broker.pending() == 0
    assert sends[by_index[3].task_id] <= 2  # once in the batch, at most once alone: never a loop
    worker = app.start_background(concurrency=1)
    try:
        wait_for(lambda: sorted(runs) == [-1, 0, 1, 2, 4, 5, 6, 7], 60, "the 8 accepted tasks to run")
        wait_for(lambda: depth(rabbit, "high_priority_queue_0") == 0, 30, "the queue to drain")
    finally:
        worker.stop()
    ran_twice = sum(n - 1 for n in runs.values())
    figures("message over RabbitMQ's max_message_size (406)", sent=len(by_index), succeeded=len(runs), lost=0,
            ran_twice=ran_twice, dead_lettered=0, refused_alone=1, recover_s=round(recover_s, 3))  # fmt: skip
    assert ran_twice == 0 and 3 not in runs


@pytest.mark.disruptive
def test_in_the_lean_profile_a_refused_message_fails_only_its_own_hand_off(rabbit_app: Callable[..., App]):
    """The lean sender publishes a whole batch in one pass (``publish_each``), each message settling its
    own ``.delay()``'s hand-off: the one RabbitMQ refuses fails alone, the others are confirmed."""
    app = rabbit_app(profile="lean")

    @app.task(name="publishing.lean_echo")
    def echo(index: int, padding: str = "") -> int:
        return index

    previous = erlang("application:get_env(rabbit, max_message_size).")
    assert previous.startswith("{ok,"), previous
    erlang("application:set_env(rabbit, max_message_size, 4096).")
    try:
        handles = [echo.delay(i, padding="x" * 5000 if i == 3 else "") for i in range(7)]
        with pytest.raises(PublishError, match=r"PRECONDITION_FAILED - message size \d+ is larger than configured"):
            handles[3].wait_sent(timeout=30)
        assert [h.wait_sent(timeout=30) for i, h in enumerate(handles) if i != 3] == [True] * 6
    finally:
        erlang(f"application:set_env(rabbit, max_message_size, {previous[4:-1]}).")
    by_index = {r.payload["args"][0]: r for r in records(app.backend)}
    assert by_index[3].status is Status.FAILED
    assert {i: r.status for i, r in by_index.items() if i != 3} == dict.fromkeys([0, 1, 2, 4, 5, 6], Status.QUEUED)


@pytest.mark.disruptive
def test_in_recorded_mode_a_refused_message_fails_its_record_and_get_raises(rabbit_app: Callable[..., App]):
    """A send that did not wait for its confirm learns of the refusal through its record: get() raises."""
    app = rabbit_app()  # send_mode="recorded", the default

    @app.task(name="publishing.big")
    def big(index: int, padding: str = "") -> int:
        return index

    previous = erlang("application:get_env(rabbit, max_message_size).")
    erlang("application:set_env(rabbit, max_message_size, 4096).")
    try:
        small = big.delay(1)
        large = big.send(args=(2,), kwargs={"padding": "x" * 5000})  # returns: the refusal comes later
        assert small.wait_sent(30)
        with pytest.raises(PublishError, match="message size"):
            large.wait_sent(30)
        after = big.delay(3)
        assert after.wait_sent(30)
    finally:
        erlang(f"application:set_env(rabbit, max_message_size, {previous[4:-1]}).")
    with pytest.raises(TaskFailed, match=r"not published: RabbitMQ refused the message.*message size"):
        large.get(timeout=10)
    assert small.status is Status.QUEUED and after.status is Status.QUEUED


def test_user_without_write_permission_fails_each_message_alone(
    rabbit_app: Callable[..., App], rabbit_user: Callable[..., str]
):
    app = rabbit_app(broker=rabbit_user("nowrite", "secret", write="^$"), send_mode="confirmed")
    sends = counting_sends(app)
    started = time.monotonic()
    with pytest.raises(PublishError, match=r"ACCESS_REFUSED - access to exchange 'amq\.default'"):
        app.send_many("publishing.nowrite", [((i,), {}) for i in range(3)])
    recover_s = time.monotonic() - started
    with pytest.raises(PublishError, match="ACCESS_REFUSED"):
        app.send_task("publishing.nowrite", args=(3,))  # the next send is refused too, not stuck

    failed = records(app.backend)
    assert [r.status for r in failed] == [Status.FAILED] * 4
    assert all("ACCESS_REFUSED" in str(r.fail_error) for r in failed)
    assert app.broker.pending() == 0
    assert max(sends.values()) <= 2 and sum(sends.values()) <= 7
    figures("user without write permission (403)", sent=4, succeeded=0, lost=0, ran_twice=0, dead_lettered=0,
            failed_with_reason=4, recover_s=round(recover_s, 3))  # fmt: skip


# 2. Wrong credentials or vhost


@pytest.mark.parametrize("problem", ["password", "vhost"])
def test_refused_login_or_vhost_fails_the_first_send_at_once(rabbit: str, problem: str):
    host = rabbit.split("@", 1)[1].split("/", 1)[0]
    url = f"amqp://guest:wrong-secret@{host}/{VHOST}" if problem == "password" else f"amqp://guest:guest@{host}/nope"
    app = App(
        "refused", broker=url, backend="memory://", connection_timeout=600, close_timeout=1, send_mode="confirmed"
    )
    try:
        started = time.monotonic()
        with pytest.raises(BrokerAccessRefused) as raised:
            app.send_task("publishing.refused", args=(1,))
        failed_after_s = time.monotonic() - started
        message = str(raised.value)
        assert "'guest'" in message and host in message and "wrong-secret" not in message
        assert ("'nope'" if problem == "vhost" else repr(VHOST)) in message
        assert app.broker.pending() == 0  # nothing parked for connection_timeout
        (record,) = records(app.backend)
        assert record.status is Status.FAILED and "RabbitMQ refused" in str(record.fail_error)
        with pytest.raises(BrokerAccessRefused):
            app.send_task("publishing.refused", args=(2,))
    finally:
        app.close()
    figures(f"refused {problem}", sent=2, succeeded=0, lost=0, ran_twice=0, dead_lettered=0,
            failed_with_reason=2, recover_s=round(failed_after_s, 3))  # fmt: skip


def test_password_changed_while_reconnecting_abandons_the_outbox_with_the_reason(
    proxy: TcpProxy, rabbit_app: Callable[..., App], rabbit_user: Callable[..., str]
):
    url = proxy.url(rabbit_user("rotated", "first"))
    user = f"{VHOST}_rotated"
    app = rabbit_app(broker=url, request_timeout=1.0, close_timeout=1, send_mode="confirmed")
    assert app.send_task("publishing.rotated", args=(0,)).status is Status.QUEUED
    rabbitmqctl("change_password", user, "second")  # the open connection keeps working
    proxy.kill()
    parked = [app.send_task("publishing.rotated", args=(i,)) for i in range(1, 4)]
    assert app.broker.pending() == 3
    started = time.monotonic()
    proxy.start()  # the publisher redials with the old password

    ids = [r.id for r in parked]
    wait_for(lambda: statuses(app.backend, ids) == Counter({Status.FAILED: 3}), 60, "the outbox to be abandoned")
    abandoned_s = time.monotonic() - started
    assert all(user in str(app.backend.get(i).fail_error) for i in ids)  # type: ignore[union-attr]
    assert app.broker.pending() == 0
    with pytest.raises(BrokerAccessRefused, match=user):
        app.send_task("publishing.rotated", args=(4,))  # at once, not parked: nothing loops in the background
    rabbitmqctl("change_password", user, "first")
    assert app.send_task("publishing.rotated", args=(5,)).status is Status.QUEUED  # a send dials again
    figures("password changed while reconnecting", sent=6, succeeded=2, lost=0, ran_twice=0, dead_lettered=0,
            failed_with_reason=4, recover_s=round(abandoned_s, 3))  # fmt: skip


# 3. close() drains the outbox


def test_close_waits_for_the_broker_and_confirms_the_outbox(
    rabbit: str, proxy: TcpProxy, rabbit_app: Callable[..., App]
):
    app = rabbit_app(broker=proxy.url(rabbit), close_timeout=60, send_mode="confirmed")
    broker, backend = app.broker, app.backend
    assert app.send_task("publishing.drain", args=(0,)).status is Status.QUEUED
    proxy.kill()
    parked = [app.send_task("publishing.drain", args=(i,)) for i in range(1, 21)]
    assert broker.pending() == 20
    closer = threading.Thread(target=app.close, name="closer")
    closer.start()
    wait_for(lambda: broker.publisher.state.phase is Phase.CLOSING, 10, "close() to start")  # type: ignore[attr-defined]
    started = time.monotonic()
    proxy.start()
    closer.join(90)
    recover_s = time.monotonic() - started

    assert not closer.is_alive()
    assert statuses(backend, [r.id for r in parked]) == Counter({Status.QUEUED: 20})
    assert depth(rabbit, "high_priority_queue_0") == 21
    assert broker.pending() == 0
    assert broker.publisher.reconnects == 1  # type: ignore[attr-defined]  # the metric's publisher half
    with pytest.raises(BrokerUnavailable, match="closed"):
        broker.publish(
            [Message.for_record(new_record("n", (), {}, priority=Priority.HIGH, retry=0, primary_key=None), 0)]
        )
    figures("close() drains the outbox through a reconnect", sent=21, succeeded=21, lost=0, ran_twice=0,
            dead_lettered=0, recover_s=round(recover_s, 3))  # fmt: skip


def test_close_with_the_broker_away_returns_and_logs_what_stays_unconfirmed(
    rabbit: str, proxy: TcpProxy, rabbit_app: Callable[..., App], caplog: pytest.LogCaptureFixture
):
    app = rabbit_app(broker=proxy.url(rabbit), close_timeout=1.0, send_mode="confirmed")
    broker, backend = app.broker, app.backend
    proxy.kill()
    parked = [app.send_task("publishing.away", args=(i,)) for i in range(5)]
    message = Message.for_record(
        new_record("publishing.away", (9,), {}, priority=Priority.HIGH, retry=0, primary_key=None), 0
    )
    receipt = broker.publish([message])
    fates: list[str | None] = []
    receipt.add_done_callback(fates.append)

    with caplog.at_level(logging.WARNING, logger="cogman.rabbitmq"):
        app.close()

    assert "closed with 6 message(s) never confirmed" in caplog.text
    assert statuses(backend, [r.id for r in parked]) == Counter({Status.INITIATED: 5})  # for re-enqueue
    assert receipt.done and len(fates) == 1 and "stays 'initiated'" in str(fates[0])
    assert broker.pending() == 0
    figures("close() with the broker away", sent=6, succeeded=0, lost=0, ran_twice=0, dead_lettered=0,
            left_initiated=5, recover_s="n/a")  # fmt: skip


EXIT_SCRIPT = """
import os
from cogman import App

app = App("exit", broker=os.environ["URL"], backend="memory://", close_timeout=60, request_timeout=1,
          send_mode="confirmed")
for index in range(5):
    app.send_task("publishing.exit", args=(index,))
print("parked", app.broker.pending(), flush=True)
# no close(): interpreter exit drains the outbox
"""


def test_interpreter_exit_drains_the_outbox(rabbit: str, proxy: TcpProxy):
    with Connection(rabbit) as connection:  # the queues exist, so an empty one reads as 0
        Topology().declare(connection.channel())
    proxy.kill()
    child = subprocess.Popen(
        [sys.executable, "-c", EXIT_SCRIPT],
        cwd=ROOT,
        env={"URL": proxy.url(rabbit), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"parked 5"
        started = time.monotonic()
        proxy.start()
        assert child.wait(90) == 0
    finally:
        if child.poll() is None:
            child.kill()
    recover_s = time.monotonic() - started
    assert depth(rabbit, "high_priority_queue_0") == 5
    figures("interpreter exit drains the outbox", sent=5, succeeded=5, lost=0, ran_twice=0, dead_lettered=0,
            recover_s=round(recover_s, 3))  # fmt: skip


def test_receipt_of_a_message_parked_through_an_outage_settles_once(
    rabbit: str, proxy: TcpProxy, rabbit_app: Callable[..., App]
):
    app = rabbit_app(broker=proxy.url(rabbit), send_mode="confirmed")
    broker = app.broker
    assert isinstance(broker, RabbitMQBroker)
    record = new_record("publishing.receipt", (1,), {}, priority=Priority.HIGH, retry=0, primary_key=None)
    app.backend.create([record])
    proxy.kill()
    receipt = broker.publish([Message.for_record(record, 0)])
    fates: list[tuple[str | None, str]] = []
    receipt.add_done_callback(lambda failure: fates.append((failure, threading.current_thread().name)))
    assert not receipt.done and broker.unconfirmed_ids() == [record.task_id]

    proxy.start()
    wait_for(lambda: receipt.done, 60, "the receipt to settle after the reconnect")
    assert receipt.wait(0) is True
    assert fates == [(None, "cogman-outbox")]  # once, from the flusher thread, after the record moved on
    assert app.backend.get(record.task_id).status is Status.QUEUED  # type: ignore[union-attr]
    assert broker.unconfirmed_ids() == [] and broker.pending() == 0


# 4. No send hangs; a bounded outbox


@pytest.mark.disruptive
def test_send_under_a_disk_alarm_returns_and_is_flushed_on_unblock(rabbit: str, rabbit_app: Callable[..., App]):
    app = rabbit_app(request_timeout=1.0, connection_timeout=0, send_mode="confirmed")
    publisher = app.broker.publisher  # type: ignore[attr-defined]
    assert app.send_task("publishing.alarm", args=(-1,)).status is Status.QUEUED
    sends = counting_sends(app)
    previous = erlang("rabbit_disk_monitor:get_disk_free_limit().")
    assert previous.isdigit(), previous
    results: list = []

    def send_in_a_thread(calls: list) -> None:
        sender = threading.Thread(target=lambda: results.extend(app.send_many("publishing.alarm", calls)))
        sender.start()
        sender.join(60)
        assert not sender.is_alive(), "a send hung under the alarm"

    rabbitmqctl("set_disk_free_limit", "1000GB")
    try:
        wait_for(lambda: "disk" in erlang("rabbit_alarm:get_alarms()."), 30, "the disk alarm")
        send_in_a_thread([((i, "x" * 1_000_000), {}) for i in range(12)])  # 12 MB: more than socket buffers
        wait_for(lambda: publisher.state.phase is Phase.BLOCKED, 30, "connection.blocked to be honoured")
        on_the_wire = sum(sends.values())
        for index in range(12, 17):
            send_in_a_thread([((index,), {})])
        assert sum(sends.values()) == on_the_wire  # parked while blocked, not written to a closed door
        assert statuses(app.backend, [r.id for r in results]) == Counter({Status.INITIATED: 17})
        assert app.broker.pending() == 17
        started = time.monotonic()
    finally:
        rabbitmqctl("set_disk_free_limit", previous)
    wait_for(lambda: statuses(app.backend, [r.id for r in results]) == Counter({Status.QUEUED: 17}), 120,
             "the outbox to flush after the alarm")  # fmt: skip
    recover_s = time.monotonic() - started
    assert app.broker.pending() == 0 and publisher.state.phase is Phase.UP
    published_twice = depth(rabbit, "high_priority_queue_0") - 18  # a confirm lost with a dropped connection
    figures("disk alarm (connection.blocked)", sent=17, succeeded=17, lost=0, ran_twice=0, dead_lettered=0,
            published_twice=published_twice, recover_s=round(recover_s, 3))  # fmt: skip


def test_full_outbox_makes_a_send_wait_then_raise(rabbit: str, proxy: TcpProxy, rabbit_app: Callable[..., App]):
    app = rabbit_app(broker=proxy.url(rabbit), outbox_limit=5, request_timeout=0.5, send_mode="confirmed")
    assert app.send_task("publishing.full", args=(0,)).status is Status.QUEUED
    proxy.kill()
    parked = [app.send_task("publishing.full", args=(i,)) for i in range(1, 6)]
    assert app.broker.pending() == 5
    assert sorted(app.broker.unconfirmed_ids()) == sorted(r.id for r in parked)

    with pytest.raises(BrokerUnavailable, match="outbox_limit=5"):
        app.send_task("publishing.full", args=(6,))
    (refused,) = [r for r in records(app.backend) if r.payload["args"] == [6]]
    assert refused.status is Status.FAILED and "outbox_limit=5" in str(refused.fail_error)
    assert app.broker.pending() == 5
    started = time.monotonic()
    proxy.start()
    wait_for(lambda: statuses(app.backend, [r.id for r in parked]) == Counter({Status.QUEUED: 5}), 60, "the flush")
    recover_s = time.monotonic() - started
    assert app.send_task("publishing.full", args=(7,)).status is Status.QUEUED  # room again
    figures("outbox full (outbox_limit=5)", sent=8, confirmed=7, lost=0, ran_twice=0, dead_lettered=0,
            failed_with_reason=1, recover_s=round(recover_s, 3))  # fmt: skip
