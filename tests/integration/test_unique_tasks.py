"""Unique tasks (issue 23): a send whose key is held by a task that is not final sends nothing and returns
that task's handle, ``deduplicated``.

The real-stack tests send over RabbitMQ with the records in Redis, from threads and from two processes
at once, and count the runs from the task body (a Redis counter) and the messages in the queues; the
memory tests show the same on the embedded transport, the task-level key, the refusals, and a unique
send while the backend is away (BackendUnavailable, nothing published).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cogman import App, Status
from cogman.backends.base import TaskQuery
from cogman.errors import BackendUnavailable
from tests.integration.rabbit_helpers import ROOT, wait_for
from tests.ports import free_ports


@pytest.fixture
def env(worker_env: dict[str, str]) -> dict[str, str]:
    return worker_env


@pytest.fixture
def stack(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """tests/integration/unique_app.py, imported with this test's broker, backend and prefix."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sys.modules.pop("tests.integration.unique_app", None)
    import tests.integration.unique_app as unique_app

    yield unique_app
    unique_app.app.close()
    sys.modules.pop("tests.integration.unique_app", None)


def runs(env: dict[str, str], invoice: str) -> int:
    counter = redis.Redis.from_url(env["COGMAN_BACKEND_URL"])
    try:
        return int(counter.get(f"{env['COGMAN_TEST_PREFIX']}:runs:{invoice}") or 0)
    finally:
        counter.close()


def ready_messages(app: App) -> int:
    return sum(q.ready for q in app.broker.queue_stats() if q.kind in ("high", "low"))


def records_of(app: App, name: str) -> int:
    return app.backend.query(TaskQuery(name=name, limit=100)).total


def test_concurrent_senders_in_threads_and_two_processes_send_one_task(stack: Any, env: dict[str, str]):
    invoice = uuid.uuid4().hex[:8]
    senders = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.unique_app", invoice, "5"],
            cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    handles: list[Any] = []
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        handles.append(stack.charge.delay(invoice))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for sender in senders:
        assert sender.stdin is not None
        sender.stdin.write("go\n")
        sender.stdin.flush()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = []
    for sender in senders:
        out, _ = sender.communicate(timeout=60)
        assert sender.returncode == 0, out
        lines += [line.split() for line in out.splitlines()]
    ids = {h.id for h in handles} | {task_id for task_id, _ in lines}
    assert len(ids) == 1 and len(lines) == 10
    dedup_flags = [h.deduplicated for h in handles] + [flag == "1" for _, flag in lines]
    assert dedup_flags.count(False) == 1  # the one send that sent
    app = stack.app
    wait_for(lambda: ready_messages(app) == 1, 30, "the one message in the queues")
    assert records_of(app, "unique.charge") == 1
    worker = app.start_background(concurrency=2)
    try:
        assert app.result(ids.pop()).get(timeout=60) == f"charged {invoice}"
    finally:
        worker.stop()
    assert runs(env, invoice) == 1
    assert ready_messages(app) == 0


def test_the_key_is_free_again_after_success_and_after_failure_on_rabbitmq(stack: Any, env: dict[str, str]):
    app = stack.app

    @app.task(name="unique.flaky", unique_key="flaky-one")
    def flaky(fail: bool) -> str:
        if fail:
            raise RuntimeError("declined")
        return "ok"

    first = flaky.delay(True)
    assert flaky.delay(False).id == first.id
    worker = app.start_background(concurrency=1)
    try:
        wait_for(lambda: app.backend.get(first.id).status is Status.FAILED, 60, "the failure")  # type: ignore[union-attr]
        second = flaky.delay(False)
        assert not second.deduplicated and second.id != first.id
        assert second.get(timeout=60) == "ok"
        third = flaky.delay(False)
        assert not third.deduplicated and third.get(timeout=60) == "ok"
    finally:
        worker.stop()


# The embedded transport


def test_on_memory_a_held_key_returns_the_holder_and_sends_nothing(app: App):
    ran: list[int] = []

    @app.task(name="charge", unique_key=lambda invoice_id: f"invoice-{invoice_id}")
    def charge(invoice_id: int) -> int:
        ran.append(invoice_id)
        return invoice_id

    first = charge.delay(42)
    again = charge.send(args=(42,))
    other = charge.delay(43)
    assert not first.deduplicated and again.deduplicated and not other.deduplicated
    assert again.id == first.id and other.id != first.id
    assert app.broker.depth() == 2  # type: ignore[attr-defined]
    worker = app.start_background(concurrency=1)
    try:
        app.join(timeout=30)
        assert sorted(ran) == [42, 43]
        after = charge.delay(42)  # the holder is final: the key is free
        assert not after.deduplicated and after.get(timeout=30) == 42
    finally:
        worker.stop()
    assert sorted(ran) == [42, 42, 43]


def test_a_send_level_key_and_unique_for(app: App):
    @app.task(name="plain")
    def plain(n: int) -> int:
        return n

    first = plain.send(args=(1,), unique_key="report", unique_for=30)
    assert plain.send(args=(2,), unique_key="report").deduplicated
    assert not plain.send(args=(3,)).deduplicated  # no key: an ordinary send
    record = first.record()
    assert record.payload["unique_key"] == "report" and record.payload["unique_for"] == 30.0


def test_unique_sends_are_checked_before_anything_is_written(app: App):
    @app.task(name="keyed", unique_key=lambda n: f"n-{n}")
    def keyed(n: int) -> int:
        return n

    @app.task(name="bad", unique_key=lambda n: n)
    def bad(n: int) -> int:
        return n

    with pytest.raises(ValueError, match="send_many cannot send unique tasks"):
        keyed.send_many([(1,), (2,)])
    with pytest.raises(TypeError, match="unique_key must be a string"):
        bad.delay(7)

    @app.task(name="unkeyed")
    def unkeyed() -> None:
        """No key of its own."""

    with pytest.raises(ValueError, match="unique_for was given without a unique_key"):
        unkeyed.send(unique_for=5)
    with pytest.raises(ValueError, match="unique_for must be a finite number"):
        keyed.send(args=(1,), unique_key="k", unique_for=-1)
    with pytest.raises(TypeError, match="unique_key must be a non-empty string or a callable"):
        app.task(name="wrong", unique_key=3)(lambda: None)  # type: ignore[call-overload]
    assert app.broker.depth() == 0  # type: ignore[attr-defined]
    assert app.backend.query(TaskQuery(limit=10)).total == 0


def test_a_unique_send_while_the_backend_is_away_raises_and_publishes_nothing():
    app = App("away", broker="memory://", backend=f"redis://127.0.0.1:{free_ports()}/0")
    try:

        @app.task(name="away.keyed", unique_key="one")
        def keyed() -> None:
            """Never runs."""

        with pytest.raises(BackendUnavailable, match="under unique key 'one'"):
            keyed.delay()
        assert app.broker.depth() == 0  # type: ignore[attr-defined]
    finally:
        app.close()


def test_go_format_tasks_refuse_unique_keys(app: App):
    with pytest.raises(ValueError, match="has no unique tasks"):
        app.task(name="go.keyed", wire="go", unique_key="k")(lambda payload: None)

    @app.task(name="go.plain", wire="go")
    def plain(payload: bytes) -> None:
        """Never runs."""

    with pytest.raises(ValueError, match="unique_key"):
        plain.send(args=(b"x",), unique_key="k")
    assert app.broker.depth() == 0  # type: ignore[attr-defined]


def test_apply_async_and_send_task_take_a_unique_key_too():
    app = App("unique-names", broker="memory://", backend="memory://")

    @app.task(name="unique.by_name")
    def by_name(x: int) -> int:
        return x

    first = by_name.apply_async(args=(1,), unique_key="by-name-1")
    again = app.send_task("unique.by_name", args=(2,), unique_key="by-name-1")
    other = app.send_task("unique.by_name", args=(3,), unique_key="by-name-2")
    assert (again.id, again.deduplicated, first.deduplicated) == (first.id, True, False)
    assert other.id != first.id and not other.deduplicated
    worker = app.start_background(concurrency=1)
    try:
        assert (first.get(timeout=10), other.get(timeout=10)) == (1, 3)
    finally:
        worker.stop()
        app.close()
