"""A long-running memory:// process stays bounded (issue 19, item 15): records expire after
``redis_ttl`` as Redis's do, early statuses after an hour, a chord's set once its callback is recorded,
and ``app.unjoined`` drops the ids of finished tasks. Time is a fake clock: nothing waits for it."""

from __future__ import annotations

import threading
import uuid

import pytest

from cogman import App, Middleware, TaskFailed, chord, group
from cogman.backends.memory import MemoryBackend
from cogman.message import Message
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.sending.client import new_record
from cogman.status import Status
from cogman.worker import inprocess


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record() -> TaskRecord:
    return new_record("job", (1,), {}, priority=Priority.HIGH, retry=0, primary_key=None, task_id=str(uuid.uuid4()))


def test_records_expire_ttl_after_their_last_change():
    clock = Clock()
    backend = MemoryBackend(60, clock=clock)
    old = [record() for _ in range(1000)]
    backend.create(old)
    for each in old:
        backend.transition(each.task_id, Status.SUCCESS, result=[1, 2])
    kept = record()
    backend.create([kept])
    clock.now += 50
    backend.transition(kept.task_id, Status.QUEUED)  # a change: 60 s more from now
    assert backend.sizes()["records"] == 1001

    clock.now += 11  # 61 s after the others' last change, 11 s after the kept one's
    assert backend.get(old[0].task_id) is None
    assert backend.sizes()["records"] == 1
    assert backend.get(kept.task_id) is not None
    clock.now += 50
    assert backend.sizes()["records"] == 0


def test_statuses_of_records_that_never_came_expire_after_an_hour():
    clock = Clock()
    backend = MemoryBackend(7 * 24 * 3600, clock=clock)
    for _ in range(500):
        backend.transition(str(uuid.uuid4()), Status.SUCCESS, result=1)  # no record: kept aside
    assert backend.sizes()["early"] == 500
    clock.now += 3601
    assert backend.sizes()["early"] == 0


def test_the_app_gives_its_memory_backend_the_configured_ttl():
    app = App("bounded", broker="memory://", backend="memory://", redis_ttl=90)
    try:
        backend = app.backend
        assert isinstance(backend, MemoryBackend) and backend.ttl == 90
    finally:
        app.close()


@pytest.fixture
def app():
    application = App("bounds", broker="memory://", backend="memory://")
    yield application
    application.close()


def test_chords_are_dropped_once_their_callback_is_recorded(app: App):
    @app.task(name="bounds.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="bounds.total")
    def total(values: list[int]) -> int:
        return sum(values)

    worker = app.start_background(concurrency=4)
    try:
        results = [chord(group(add.s(i, j) for j in range(3)), total.s()).delay() for i in range(50)]
        assert [result.get(timeout=30) for result in results] == [3 * i + 3 for i in range(50)]
    finally:
        worker.stop()
    backend = app.backend
    assert isinstance(backend, MemoryBackend)
    assert backend.sizes()["chords"] == 0  # each set was dropped when its callback's record was created


def test_a_late_member_of_a_decided_chord_keeps_nothing():
    backend = MemoryBackend()
    assert backend.join_chord("c1", 0, 2, '{"ok": 1}') is None
    assert backend.join_chord("c1", 1, 2, '{"ok": 2}') == ['{"ok": 1}', '{"ok": 2}']
    from cogman.signature import callback_id

    callback = new_record("total", ([1, 2],), {}, priority=Priority.HIGH, retry=0, primary_key=None,
                          task_id=callback_id("c1"))  # fmt: skip
    assert backend.create_new(callback)
    assert backend.sizes()["chords"] == 0
    assert backend.join_chord("c1", 1, 2, '{"ok": 2}') is None  # a redelivered member: nothing to send again
    assert backend.sizes()["chords"] == 0


def test_finished_ids_leave_unjoined(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(inprocess, "PRUNE_FROM", 100)
    monkeypatch.setattr(inprocess, "FAILURES_KEPT", 2)
    app = App("bounds", broker="memory://", backend="memory://")

    @app.task(name="bounds.echo")
    def echo(value: int) -> int:
        if value < 0:
            raise ValueError(f"negative: {value}")
        return value

    worker = app.start_background(concurrency=4)
    try:
        failures = [echo.delay(-index) for index in range(1, 4)]  # three failures; the first two are kept
        for failure in failures:
            with pytest.raises(TaskFailed):
                failure.get(timeout=10)
        for start in range(0, 1000, 50):
            sent = app.send_many("bounds.echo", [((i,), {}) for i in range(start, start + 50)])
            assert [result.get(timeout=10) for result in sent] == list(range(start, start + 50))
        # Pruned at 100 ids, then at twice what was left: never more than that plus one batch.
        assert len(app.unjoined) <= 100 + 50
        with pytest.raises(TaskFailed, match="negative: -1"):  # the earliest failure still raises
            app.join(timeout=10, fail_fast=True)
        with pytest.raises(TaskFailed, match="negative: -2"):
            app.join(timeout=10, fail_fast=True)
        app.join(timeout=10, fail_fast=True)  # the third was dropped (FAILURES_KEPT): only successes left
        assert len(app.unjoined) == 0
    finally:
        worker.stop()
        app.close()


def test_a_chord_failed_by_a_member_keeps_its_set_until_a_manual_retry_completes_it(app: App):
    """A failed member marks the callback "not run" but sends nothing: the set stays, so a manual retry
    of that member that succeeds still completes the chord (and the set goes once the callback is sent)."""
    from cogman.admin.actions import retry_task

    fixed = threading.Event()
    settled: list[str] = []
    both_failed, both_retried = threading.Event(), threading.Event()

    class Settled(Middleware):
        """A delivery is settled after its workflow step (the chord join, and the callback's send once
        the set is complete) is recorded."""

        def after_outcome(self, message: Message | None, outcome: str) -> None:
            if message is not None and message.name == "bounds.flaky":
                settled.append(outcome)
                if len(settled) == 2:
                    both_failed.set()
                elif len(settled) == 4:
                    both_retried.set()

    app.middleware.middleware.append(Settled())

    @app.task(name="bounds.flaky")
    def flaky(x: int) -> int:
        if not fixed.is_set():
            raise ValueError(f"not yet: {x}")
        return x + 1

    @app.task(name="bounds.total")
    def total(values: list[int]) -> int:
        return sum(values)

    worker = app.start_background(concurrency=2)
    try:
        result = chord([flaky.s(1), flaky.s(2)], total.s()).delay()
        for member in result.group.results:
            with pytest.raises(TaskFailed):
                member.get(timeout=10)
        assert both_failed.wait(10), settled  # both members failed and joined the chord
        backend = app.backend
        assert isinstance(backend, MemoryBackend)
        assert backend.sizes()["chords"] == 1  # the callback is recorded "not run", not sent
        fixed.set()
        retry_task(app, result.group.results[0].id)
        retry_task(app, result.group.results[1].id)
        # Until the second retried member has joined, the callback's record still reads "not run".
        assert both_retried.wait(10), settled
        assert result.get(timeout=10) == 5
        assert backend.sizes()["chords"] == 0
    finally:
        worker.stop()
