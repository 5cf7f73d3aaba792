"""Faults ``rabbitmqctl`` cannot produce: a server that dies without closing its connections, and a
network that goes silent. A TCP proxy (tcp_proxy.py) sits between cogman and the real RabbitMQ.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest

from cogman import App, Status
from tests.integration.rabbit_helpers import CountingLoad, figures, wait_for
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


def statuses(app: App, results: list) -> Counter[Status]:
    return Counter(app.backend.get(r.id).status for r in results)


def test_killed_server_while_sending_and_running(rabbit: str, proxy: TcpProxy, rabbit_app: Callable[..., App]):
    app = rabbit_app(broker=proxy.url(rabbit), connection_timeout=0)
    load = CountingLoad(app, "network.count", 1000, mark=250)
    runs, results, sender = load.runs, load.results, load.sender
    worker = app.start_background(concurrency=4)
    consumer = worker._consumer
    sender.start()
    try:
        assert load.marked.wait(60)
        proxy.kill()  # every connection reset, new ones refused: a crashed server
        wait_for(lambda: len(results) >= 500, 60, "sends to go on into the outbox")
        proxy.start()
        sender.join(120)
        wait_for(lambda: len(runs) == 1000, 120, "all 1,000 tasks to run")
        wait_for(lambda: statuses(app, results) == Counter({Status.SUCCESS: 1000}), 60, "every record success")
    finally:
        proxy.start() if not proxy._running.is_set() else None
        sender.join(120)
        worker.stop()

    figures("killed server (connection reset)", sent=1000, succeeded=1000, lost=1000 - len(runs),
            duplicated=load.duplicated)  # fmt: skip
    assert sorted(runs) == list(range(1000))
    assert getattr(consumer, "reconnects", 0) >= 1


def test_silent_network_sends_return_and_are_confirmed_later(
    rabbit: str, proxy: TcpProxy, rabbit_app: Callable[..., App]
):
    app = rabbit_app(broker=proxy.url(rabbit), request_timeout=1.0)

    @app.task(name="network.later")
    def later(index: int) -> int:
        return index

    first = later.delay(0)
    assert first.wait_sent(30) and first.status is Status.QUEUED  # connected and confirmed
    proxy.freeze()
    results: list = []

    def send(index: int) -> None:
        results.append(later.delay(index))  # must return, neither raise nor hang

    senders = [threading.Thread(target=send, args=(i,)) for i in range(1, 4)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(30)
    assert [t.is_alive() for t in senders] == [False] * 3
    assert statuses(app, results) == Counter({Status.INITIATED: 3})  # not confirmed yet: not "queued"

    proxy.thaw()
    wait_for(lambda: statuses(app, results) == Counter({Status.QUEUED: 3}), 30, "the late confirms")
    worker = app.start_background(concurrency=2)
    try:
        assert sorted(r.get(timeout=30) for r in results) == [1, 2, 3]
    finally:
        worker.stop()
