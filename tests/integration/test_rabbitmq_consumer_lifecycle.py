"""The RabbitMQ consumer's life against the real broker: deliveries of a dropped connection are not
current, cancel stops deliveries while acks still go through, no descriptor-number ceiling, and the
errors a reconnect cannot fix reach ``receive`` instead of a loop (issue 7, items 8, 9, 10 and 11).
"""

from __future__ import annotations

import os
import resource
import time
import uuid
from contextlib import suppress

from cogman.brokers.rabbitmq.consumer import ConsumerStopped, RabbitMQConsumer
from cogman.errors import BrokerAccessRefused, CogmanError, TopologyError
from cogman.priority import Priority
from tests.integration.consuming_helpers import MakeBroker, delete_queue, make_broker, message, unacked
from tests.integration.rabbit_helpers import VHOST, consumer_count, depth, figures, rabbitmqctl, wait_for
from tests.integration.tcp_proxy import TcpProxy

__all__ = ["make_broker"]  # fixtures

HIGH = "high_priority_queue_0"


def buffered(consumer: RabbitMQConsumer) -> int:
    return sum(len(buffer) for buffer in consumer._buffers.values())


def fatal_error(consumer: RabbitMQConsumer, timeout: float) -> BaseException:
    """Call ``receive`` until it raises (the worker's fetch loop does the same); return what it raised."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            consumer.receive(0.2)
        except CogmanError as exc:
            return exc
    raise AssertionError(f"receive did not raise within {timeout} s")


def test_deliveries_of_a_dropped_connection_are_not_current(rabbit: str, proxy: TcpProxy, make_broker: MakeBroker):
    sent = [message(Priority.HIGH, i) for i in range(3)]
    make_broker().publish(sent)
    consumer = make_broker(url=proxy.url(rabbit)).consume([Priority.HIGH], prefetch=3)
    try:
        first = consumer.receive(10)
        assert first is not None and consumer.is_current(first)
        wait_for(lambda: buffered(consumer) == 2, 10, "two more deliveries buffered")
        proxy.kill()  # RabbitMQ requeues all three; another worker may take them now
        started = time.monotonic()
        wait_for(lambda: not consumer.is_current(first), 10, "the consumer to notice the drop")
        consumer.ack(first)  # an ack for the dead connection: dropped, harmless
        proxy.start()
        again = [consumer.receive(30) for _ in range(3)]
        recovered = time.monotonic() - started
        assert all(d is not None and consumer.is_current(d) for d in again)  # no stale buffered one
        assert not consumer.is_current(first)
        assert sorted(d.headers["TaskID"] for d in again if d) == sorted(m.task_id for m in sent)
        assert all(d.redelivered for d in again if d)
        for delivery in again:
            assert delivery is not None
            consumer.ack(delivery)
        wait_for(lambda: unacked(HIGH) == 0, 10, "the acks of the current deliveries")
    finally:
        consumer.close()
    figures("dropped connection, stale deliveries", sent=3, succeeded=3, lost=0, ran_twice=0, dead_lettered=0,
            reconnects=consumer.reconnects, recover_s=round(recovered, 2))  # fmt: skip
    assert consumer.reconnects == 1 and depth(rabbit, HIGH) == 0


def test_cancel_stops_new_deliveries_but_acks_still_reach_rabbitmq(rabbit: str, make_broker: MakeBroker):
    broker = make_broker()
    broker.publish([message(Priority.HIGH, i) for i in range(5)])
    consumer = broker.consume([Priority.HIGH], prefetch=10)
    try:
        running = consumer.receive(10)
        assert running is not None
        wait_for(lambda: buffered(consumer) == 4, 10, "four deliveries buffered")
        consumer.cancel()
        assert consumer_count(rabbit, HIGH) == 0
        wait_for(lambda: depth(rabbit, HIGH) == 4, 10, "the buffered four back in the queue")
        broker.publish([message(Priority.HIGH, i) for i in range(5, 8)])
        assert depth(rabbit, HIGH) == 7  # new messages stay in RabbitMQ
        assert consumer.receive(0.5) is None
        consumer.ack(running)  # the task that was running when the worker began to stop
        wait_for(lambda: unacked(HIGH) == 0, 10, "the ack after cancel")
    finally:
        consumer.close()
    figures("cancel while a task runs", sent=8, succeeded=1, lost=0, ran_twice=0, dead_lettered=0,
            reconnects=consumer.reconnects, recover_s=0)  # fmt: skip
    assert depth(rabbit, HIGH) == 7  # had the ack not gone through, close would have returned it (8)


def test_consumer_works_with_descriptors_above_1024(make_broker: MakeBroker, rabbit: str):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if soft < wanted:
        assert hard >= wanted, f"the hard RLIMIT_NOFILE ({hard}) is too low for this test"
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    files = []
    try:
        while not files or files[-1].fileno() < 1100:
            files.append(open(os.devnull, "rb"))  # noqa: SIM115 - closed in the finally
        broker = make_broker()
        broker.publish([message(Priority.HIGH)])
        consumer = broker.consume([Priority.HIGH], prefetch=2)
        try:
            assert consumer._waker.fileno() > 1024
            assert consumer._session is not None
            assert consumer._session.connection.connection.transport.sock.fileno() > 1024
            delivery = consumer.receive(10)
            assert delivery is not None
            consumer.ack(delivery)
            wait_for(lambda: unacked(HIGH) == 0, 10, "the ack")
        finally:
            consumer.close()
        figures("descriptors above 1024", sent=1, succeeded=1, lost=0, ran_twice=0, dead_lettered=0,
                reconnects=consumer.reconnects, recover_s=0)  # fmt: skip
        assert depth(rabbit, HIGH) == 0
    finally:
        for handle in files:
            handle.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_topology_mismatch_found_on_reconnect_is_raised_by_receive(
    rabbit: str, proxy: TcpProxy, make_broker: MakeBroker
):
    consumer = make_broker(url=proxy.url(rabbit)).consume([Priority.LOW], prefetch=4)
    try:
        proxy.kill()
        delete_queue(rabbit, "low_priority_queue_0", redeclare_with={"x-queue-mode": "default"})
        proxy.start()
        started = time.monotonic()
        error = fatal_error(consumer, 30)
        consumer._thread.join(10)
        figures("topology mismatch on reconnect", sent=0, succeeded=0, lost=0, ran_twice=0, dead_lettered=0,
                reconnects=consumer.reconnects, recover_s=round(time.monotonic() - started, 2))  # fmt: skip
        assert isinstance(error, TopologyError) and "low_priority_queue_0" in str(error)
        assert not consumer._thread.is_alive()  # no consumer thread left alive with zero consumers
        assert isinstance(fatal_error(consumer, 1), TopologyError)  # and it stays raised
    finally:
        consumer.close()


def test_a_queue_deleted_under_the_consumer_is_declared_again(rabbit: str, make_broker: MakeBroker):
    broker = make_broker()
    consumer = broker.consume([Priority.HIGH], prefetch=4)
    try:
        delete_queue(rabbit, HIGH)  # RabbitMQ cancels our consumer of it (basic.cancel)
        started = time.monotonic()

        def consumed_again() -> bool:
            with suppress(Exception):
                return consumer_count(rabbit, HIGH) == 1
            return False

        wait_for(consumed_again, 30, "the queue declared and consumed again")
        recovered = time.monotonic() - started
        sent = message(Priority.HIGH)
        broker.publish([sent])
        delivery = consumer.receive(10)
        assert delivery is not None and delivery.headers["TaskID"] == sent.task_id
        consumer.ack(delivery)
    finally:
        consumer.close()
    figures("queue deleted under the consumer", sent=1, succeeded=1, lost=0, ran_twice=0, dead_lettered=0,
            reconnects=consumer.reconnects, recover_s=round(recovered, 2))  # fmt: skip
    assert consumer.reconnects == 1 and depth(rabbit, HIGH) == 0


def test_access_refused_on_reconnect_is_raised_by_receive(rabbit: str, proxy: TcpProxy, make_broker: MakeBroker):
    user = f"cogman_{VHOST}_{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_user", user, "secret")
    try:
        rabbitmqctl("set_permissions", "-p", VHOST, user, ".*", ".*", ".*")
        url = proxy.url(rabbit).replace("guest:guest@", f"{user}:secret@")
        consumer = make_broker(url=url).consume([Priority.HIGH], prefetch=4)
        try:
            proxy.kill()
            rabbitmqctl("clear_permissions", "-p", VHOST, user)
            proxy.start()
            started = time.monotonic()
            error = fatal_error(consumer, 30)
            consumer._thread.join(10)
            figures("access refused on reconnect", sent=0, succeeded=0, lost=0, ran_twice=0, dead_lettered=0,
                    reconnects=consumer.reconnects, recover_s=round(time.monotonic() - started, 2))  # fmt: skip
            assert isinstance(error, BrokerAccessRefused) and user in str(error) and "secret" not in str(error)
            assert not consumer._thread.is_alive()
        finally:
            consumer.close()
    finally:
        rabbitmqctl("delete_user", user)


def test_a_crash_of_the_io_thread_is_raised_by_receive(make_broker: MakeBroker):
    consumer = make_broker().consume([Priority.HIGH], prefetch=4)

    def crash(session: object) -> None:
        raise SystemExit("a bug")

    consumer._serve = crash  # type: ignore[method-assign]
    consumer._waker.wake()
    try:
        error = fatal_error(consumer, 10)
        consumer._thread.join(10)
        assert isinstance(error, ConsumerStopped) and "SystemExit: a bug" in str(error)
        assert not consumer._thread.is_alive()
    finally:
        consumer.close()


def test_close_after_cancel_gives_back_what_was_not_acked(rabbit: str, make_broker: MakeBroker):
    broker = make_broker()
    broker.publish([message(Priority.HIGH)])
    consumer = broker.consume([Priority.HIGH], prefetch=1)
    delivery = consumer.receive(10)
    assert delivery is not None
    consumer.cancel()
    consumer.close()  # the running task never finished: its message goes back
    assert depth(rabbit, HIGH) == 1
