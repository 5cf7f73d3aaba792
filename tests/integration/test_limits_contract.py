"""The limits store (cogman/limits/store.py), run against every backend: memory (the reference), Redis
(one log and 4 shards) and MongoDB (mongomock), as tests/integration/test_backend_contract.py runs the
records. The same calls give the same answers; the concurrent tests show each step is atomic."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from cogman.backends.base import Backend
from cogman.backends.memory import MemoryBackend
from cogman.backends.multi import MultiBackend
from cogman.limits.policy import Rate
from cogman.limits.store import LimitStore
from tests.integration.test_backend_contract import made_backend


@pytest.fixture(params=["memory", "redis", "redis-sharded", "mongomock"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from made_backend(request, request.param)


def scope() -> str:
    return f"task:{uuid.uuid4().hex[:8]}"


def eventually(condition: Callable[[], object], timeout: float, what: str) -> None:
    """For a lease or a note running out: there is nothing to be notified of but the clock."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_rate_admits_count_starts_then_says_how_long_to_wait(backend: Backend):
    store, name = backend.limits(), scope()
    rate = Rate(3, 60.0)
    assert [store.take_start(name, rate, f"t{i}") for i in range(3)] == [0, 0, 0]
    wait = store.take_start(name, rate, "t3")
    assert 59.0 < wait <= 60.0
    assert store.take_start(name, rate, "t1") == 0  # a retried call of a logged start: admitted once
    assert store.take_start(name, rate, "t4") > 59.0  # and it did not log a fourth
    assert store.take_start(scope(), rate, "t5") == 0  # scopes are independent


def test_a_start_fits_again_once_the_wait_it_was_told_is_over(backend: Backend):
    store, name = backend.limits(), scope()
    rate = Rate(2, 1.0)
    assert store.take_start(name, rate, "a") == 0
    assert store.take_start(name, rate, "b") == 0
    wait = store.take_start(name, rate, "c")
    assert 0 < wait <= 1.0
    time.sleep(wait)  # the claim under test is the figure itself
    assert store.take_start(name, rate, "c") == 0


def test_concurrent_callers_get_exactly_count_starts(backend: Backend):
    store, name = backend.limits(), scope()
    rate = Rate(5, 60.0)
    admitted: list[str] = []
    lock = threading.Lock()

    def caller(number: int) -> None:
        for attempt in range(10):
            token = f"{number}-{attempt}"
            if store.take_start(name, rate, token) == 0:
                with lock:
                    admitted.append(token)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 5


def test_slots_are_limited_reentrant_and_freed(backend: Backend):
    store, name = backend.limits(), scope()
    assert store.acquire_slot(name, "a", 2, 60.0)
    assert store.acquire_slot(name, "b", 2, 60.0)
    assert not store.acquire_slot(name, "c", 2, 60.0)
    assert store.acquire_slot(name, "a", 2, 60.0)  # a holder extends its own lease
    store.release_slot(name, "a")
    store.release_slot(name, "a")  # twice: nothing happens
    store.release_slot(name, "never-held")
    assert store.acquire_slot(name, "c", 2, 60.0)
    assert not store.acquire_slot(name, "d", 2, 60.0)
    assert store.acquire_slot(scope(), "d", 2, 60.0)


def test_concurrent_callers_get_exactly_limit_slots(backend: Backend):
    store, name = backend.limits(), scope()
    taken: list[str] = []
    lock = threading.Lock()

    def caller(number: int) -> None:
        for attempt in range(5):
            holder = f"{number}-{attempt}"
            if store.acquire_slot(name, holder, 3, 60.0):
                with lock:
                    taken.append(holder)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 3


def test_a_lease_not_renewed_frees_its_slot_and_a_renewed_one_holds(backend: Backend):
    store, name = backend.limits(), scope()
    assert store.acquire_slot(name, "dead", 1, 0.3)
    assert not store.acquire_slot(name, "other", 1, 60.0)
    eventually(lambda: store.acquire_slot(name, "other", 1, 60.0), 5.0, "the unrenewed lease to expire")
    assert store.renew_slots([(name, "dead")], 60.0) == [(name, "dead")]  # expired: never taken back
    assert not store.acquire_slot(name, "third", 1, 60.0)

    other = scope()
    assert store.acquire_slot(other, "alive", 1, 0.5)
    for _ in range(4):  # renewed well within its lease, it outlives it several times over
        time.sleep(0.2)
        assert store.renew_slots([(other, "alive")], 0.5) == []
        assert not store.acquire_slot(other, "intruder", 1, 60.0)


def test_a_note_says_why_a_task_waits_until_it_expires(backend: Backend):
    store = backend.limits()
    task_id = str(uuid.uuid4())
    assert store.waiting(task_id) is None
    store.note_waiting(task_id, "rate_limit 1/s reached for t; tries again in 0.5 s", 60.0)
    assert store.waiting(task_id) == "rate_limit 1/s reached for t; tries again in 0.5 s"
    store.note_waiting(task_id, "short", 0.2)
    eventually(lambda: store.waiting(task_id) is None, 5.0, "the note to expire")


def test_several_backends_share_the_primary_store():
    primary, secondary = MemoryBackend(), MemoryBackend()
    multi = MultiBackend([primary, secondary])
    store: LimitStore = multi.limits()
    assert store is primary.limits() and store is not secondary.limits()
    assert store.acquire_slot("s", "a", 1, 60.0) and not primary.limits().acquire_slot("s", "b", 1, 60.0)
