"""The worker's cancel poll (cogman/worker/cancelling.py) on the memory backend: it interrupts only the
attempts recorded cancelled, polls only while attempts run, ends when idle and comes back, and a poll
that raises does not end it."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import pytest

from cogman import Priority, Status, TaskRecord
from cogman.backends.memory import MemoryBackend
from cogman.record import utcnow
from cogman.worker.cancelling import AttemptCancelled, CancelWatch, Running


def running_record(backend: MemoryBackend) -> str:
    task_id, now = str(uuid.uuid4()), utcnow()
    backend.create([TaskRecord(task_id=task_id, name="t", original_task_id=task_id, priority=Priority.HIGH,
                               payload={"args": [], "kwargs": {}}, status=Status.INITIATED, created_at=now,
                               updated_at=now)])  # fmt: skip
    backend.transition(task_id, Status.IN_PROGRESS)
    return task_id


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def looping(started: threading.Event, rounds: list[int]):
    def handler(running: Running) -> str:
        started.set()
        for _ in range(3000):
            rounds.append(1)
            time.sleep(0.01)
        return "finished"

    return handler


def test_only_the_cancelled_attempt_is_interrupted_and_the_other_finishes():
    backend = MemoryBackend()
    watch = CancelWatch(backend, interval=0.05)
    doomed, kept = running_record(backend), running_record(backend)
    started, doomed_rounds, outcome = threading.Event(), [], {}

    def run_doomed() -> None:
        try:
            watch.run(doomed, False, looping(started, doomed_rounds))
        except AttemptCancelled as exc:
            outcome["doomed"] = exc

    thread = threading.Thread(target=run_doomed)
    thread.start()
    assert started.wait(10)
    backend.cancel(doomed)
    assert watch.run(kept, False, lambda running: "kept ran") == "kept ran"
    thread.join(10)
    assert not thread.is_alive() and isinstance(outcome["doomed"], AttemptCancelled)
    assert len(doomed_rounds) < 3000
    assert watch.polls >= 1


def test_the_poll_thread_ends_when_idle_and_a_new_attempt_starts_it_again():
    backend = MemoryBackend()
    watch = CancelWatch(backend, interval=0.05, idle_exit=0.1)
    assert watch.run(running_record(backend), False, lambda running: 1) == 1
    wait_until(lambda: watch._thread is None)
    polls = watch.polls
    task_id, started = running_record(backend), threading.Event()
    threading.Thread(target=lambda: (started.wait(10), backend.cancel(task_id)), daemon=True).start()
    with pytest.raises(AttemptCancelled):
        watch.run(task_id, False, looping(started, []))
    assert watch.polls > polls


def test_a_poll_that_raises_does_not_end_the_thread():
    backend = MemoryBackend()
    watch = CancelWatch(backend, interval=0.05)
    failures = iter([RuntimeError("store away"), KeyboardInterrupt()])
    real = backend.cancelled_among

    def flaky(task_ids):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real(task_ids)

    backend.cancelled_among = flaky  # type: ignore[method-assign]
    task_id, started = running_record(backend), threading.Event()
    threading.Thread(target=lambda: (started.wait(10), backend.cancel(task_id)), daemon=True).start()
    with pytest.raises(AttemptCancelled):
        watch.run(task_id, False, looping(started, []))
    assert watch.poll_errors == 2


def test_an_interrupt_lands_in_the_handler_and_never_after_it():
    """Fired while the handler runs, the interrupt stops it at its next bytecode; fired after the handler
    returned, it is never raised (the thread's later code runs undisturbed) but the attempt still ends
    cancelled, its result dropped."""
    backend = MemoryBackend()
    watch = CancelWatch(backend, interval=60)
    rounds: list[int] = []

    def handler(running: Running) -> None:
        running.fire()
        for _ in range(3000):
            rounds.append(1)
            time.sleep(0.01)

    with pytest.raises(AttemptCancelled):
        watch.run(running_record(backend), False, handler)
    assert len(rounds) <= 1
    kept: list[Running] = []
    assert watch.run(running_record(backend), False, lambda running: kept.append(running) or "done") == "done"
    kept[0].fire()  # after the handler returned: nothing is raised here
    assert sum(range(100_000)) == 4_999_950_000

    def swallows(running: Running) -> str:
        with contextlib.suppress(BaseException):
            running.fire()
            time.sleep(0.01)
        return "done"

    with pytest.raises(AttemptCancelled, match="result is dropped"):
        watch.run(running_record(backend), False, swallows)
