"""The Waker skips a wake-up while one is already pending (one system call per burst of acks), and must
never lose one: after the waiter clears it, the next wake-up writes again."""

from __future__ import annotations

import socket

from cogman.brokers.rabbitmq.connection import Waker


def test_a_burst_of_wake_ups_writes_once_and_the_next_after_a_wait_writes_again() -> None:
    waker = Waker()
    idle_a, idle_b = socket.socketpair()  # the "AMQP socket": never readable here
    try:
        for _ in range(5):
            waker.wake()
        assert waker._read.recv(4096, socket.MSG_PEEK) == b"x"  # one byte for the five
        assert waker.wait(idle_a, timeout=5.0) is False  # woken (not the socket), and cleared
        assert waker.wait(idle_a, timeout=0.0) is False  # nothing stale left behind
        waker.wake()  # the flag dropped with the clear: this one is written
        assert waker._read.recv(4096, socket.MSG_PEEK) == b"x"
        idle_b.send(b"frame")
        assert waker.wait(idle_a, timeout=5.0) is True  # the socket is readable too
    finally:
        waker.close()
        idle_a.close()
        idle_b.close()
