"""``Backend.create_unique`` (issue 23, unique tasks), run against every backend as the Backend contract
is (tests/integration/test_backend_contract.py): memory, Redis, MongoDB through mongomock. The Redis log
cut into shards refuses unique sends (a retried task's attempts live in other slots than its key).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from cogman import Status
from cogman.backends.base import Backend
from cogman.errors import ConfigError
from tests.integration.test_backend_contract import attempt_of, made_backend, record

KINDS = ["memory", "redis", "mongomock"]


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from made_backend(request, request.param)


def finish(backend: Backend, task_id: str, status: Status) -> None:
    for step in (Status.QUEUED, Status.IN_PROGRESS, status):
        backend.transition(task_id, step)


def key() -> str:
    return f"invoice-{uuid.uuid4().hex[:8]}"


def test_a_held_key_answers_with_its_holder_and_stores_nothing(backend: Backend):
    held, first, second = key(), record(), record()
    assert backend.create_unique(first, held, None) is None
    assert backend.get(first.task_id).status is Status.INITIATED  # type: ignore[union-attr]
    assert backend.create_unique(second, held, None) == first.task_id
    assert backend.get(second.task_id) is None
    assert backend.create_unique(second, key(), None) is None  # another key is another lock


@pytest.mark.parametrize("outcome", [Status.SUCCESS, Status.FAILED])
def test_the_key_is_free_once_its_holder_is_final(backend: Backend, outcome: Status):
    held, first = key(), record()
    assert backend.create_unique(first, held, None) is None
    finish(backend, first.task_id, Status.IN_PROGRESS)
    assert backend.create_unique(record(), held, None) == first.task_id  # running: still held
    backend.transition(first.task_id, outcome)
    second = record()
    assert backend.create_unique(second, held, None) is None
    assert backend.create_unique(record(), held, None) == second.task_id


def test_a_chain_being_retried_holds_the_key_until_its_last_attempt_is_final(backend: Backend):
    held, first = key(), record(retry=1)
    assert backend.create_unique(first, held, None) is None
    finish(backend, first.task_id, Status.IN_PROGRESS)
    retry = attempt_of(first, 2)
    assert backend.spawn_retry(first.task_id, retry) == 0
    backend.transition(first.task_id, Status.FAILED)  # the first attempt is final, the chain is not
    assert backend.create_unique(record(), held, None) == first.task_id
    finish(backend, retry.task_id, Status.SUCCESS)
    assert backend.create_unique(record(), held, None) is None


def test_unique_for_bounds_how_long_a_running_holder_keeps_the_key(backend: Backend):
    held, first = key(), record()
    assert backend.create_unique(first, held, 0.3) is None
    finish(backend, first.task_id, Status.IN_PROGRESS)
    assert backend.create_unique(record(), held, 0.3) == first.task_id
    deadline, taker = time.monotonic() + 10, record()
    while (holder := backend.create_unique(taker, held, 0.3)) is not None:  # a condition, not a fixed sleep
        assert holder == first.task_id and time.monotonic() < deadline, "unique_for never ran out"
        time.sleep(0.05)
    assert backend.get(taker.task_id) is not None
    assert backend.get(first.task_id).status is Status.IN_PROGRESS  # type: ignore[union-attr]


def test_of_many_concurrent_unique_creates_exactly_one_stores_its_record(backend: Backend):
    held, records = key(), [record() for _ in range(8)]
    answers: dict[str, str | None] = {}
    start = threading.Barrier(len(records))

    def send(candidate) -> None:  # type: ignore[no-untyped-def]
        start.wait()
        answers[candidate.task_id] = backend.create_unique(candidate, held, None)

    threads = [threading.Thread(target=send, args=(candidate,)) for candidate in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [task_id for task_id, holder in answers.items() if holder is None]
    assert len(winners) == 1
    assert {holder for holder in answers.values() if holder is not None} == set(winners)
    assert [r.task_id for r in records if backend.get(r.task_id) is not None] == winners


def test_a_forgotten_holder_frees_its_key(backend: Backend):
    held, first = key(), record()
    assert backend.create_unique(first, held, None) is None
    backend.delete([first.task_id])
    assert backend.create_unique(record(), held, None) is None


def test_a_sharded_redis_log_refuses_unique_sends(request: pytest.FixtureRequest):
    [sharded] = made_backend(request, "redis-sharded")
    try:
        with pytest.raises(ConfigError, match="unsharded Redis"):
            sharded.create_unique(record(), key(), None)
    finally:
        sharded.close()


def test_several_backends_let_the_first_decide_and_mirror_the_created_record():
    from cogman.backends.memory import MemoryBackend
    from cogman.backends.multi import MultiBackend

    primary, mirror = MemoryBackend(), MemoryBackend()
    both = MultiBackend([primary, mirror])
    held, first = key(), record()
    assert both.create_unique(first, held, None) is None
    assert mirror.get(first.task_id) is not None
    second = record()
    assert both.create_unique(second, held, None) == first.task_id
    assert primary.get(second.task_id) is None and mirror.get(second.task_id) is None
