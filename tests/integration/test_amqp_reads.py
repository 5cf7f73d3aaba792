"""How cogman reads frames off an AMQP connection (cogman/brokers/rabbitmq/connection.py), against the real RabbitMQ."""

from __future__ import annotations

import uuid
from typing import Any

from kombu import Exchange, Queue

from cogman.brokers.rabbitmq.connection import Waker, dial, drain_ready, wait_readable


class CountingSocket:
    """The connection's socket, counting timeout changes (a C socket's methods cannot be patched)."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.timeouts_set: list[float | None] = []

    def settimeout(self, value: float | None) -> None:
        self.timeouts_set.append(value)
        self._sock.settimeout(value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_a_round_of_deliveries_sets_the_socket_timeout_once_and_puts_it_back(rabbit: str):
    """py-amqp changes the socket's timeout and back around every frame unless it has the one asked
    for: ``drain_ready`` sets it once a round, and the socket leaves as it came (blocking)."""
    connection = dial(rabbit, timeout=5)
    waker = Waker()
    try:
        channel = connection.channel()
        channel.auto_decode = False
        queue = Queue(f"reads-{uuid.uuid4().hex}", Exchange(""), exclusive=True, auto_delete=True)(channel)
        queue.declare()
        for index in range(40):
            channel.basic_publish(channel.prepare_message(str(index).encode()), "", queue.name)
        received: list[bytes] = []
        channel.basic_consume(queue.name, callback=lambda message: received.append(message.body), no_ack=True)
        transport = connection.connection.transport
        counting = CountingSocket(transport.sock)
        transport.sock = counting
        before = counting.gettimeout()
        rounds = methods = 0
        while len(received) < 40 and rounds < 1000:
            assert wait_readable(connection, waker, 10), "RabbitMQ delivered nothing for 10 s"
            methods += drain_ready(connection)
            rounds += 1
        assert received == [str(index).encode() for index in range(40)] and methods >= 40
        # py-amqp alone: set and put back around each of a delivery's three frames, six per delivery
        assert len(counting.timeouts_set) <= 2 * rounds
        assert counting.gettimeout() == before
        transport.sock = counting._sock
    finally:
        waker.close()
        connection.release()
