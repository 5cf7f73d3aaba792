"""The cancel primitives of the Backend contract (issue 23), against every backend: memory, Redis (one
and sharded in 4), mongomock; the fixture and helpers are the contract's (test_backend_contract.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from cogman import Status
from cogman.backends.base import Backend
from cogman.backends.memory import MemoryBackend
from cogman.backends.multi import MultiBackend
from tests.integration.test_backend_contract import KINDS, attempt_of, made_backend, move_to, record

UNFINISHED = [Status.INITIATED, Status.RETRY, Status.QUEUED, Status.IN_PROGRESS]


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from made_backend(request, request.param)


@pytest.mark.parametrize("status", UNFINISHED)
def test_cancel_moves_an_unfinished_task_to_cancelled_at_once(backend: Backend, status: Status):
    rec = record()
    move_to(backend, rec, status)
    assert backend.cancel(rec.task_id) is status
    stored = backend.get(rec.task_id)
    assert stored is not None and stored.status is Status.CANCELLED
    assert stored.history[-1][0] is Status.CANCELLED
    assert backend.wait(rec.task_id, 5).status is Status.CANCELLED  # type: ignore[union-attr]


@pytest.mark.parametrize("status", [Status.SUCCESS, Status.FAILED])
def test_cancel_of_a_finished_task_changes_nothing_and_says_so(backend: Backend, status: Status):
    rec = record(retry=2)
    move_to(backend, rec, status)
    assert backend.cancel(rec.task_id) is status
    assert backend.get(rec.task_id).status is status  # type: ignore[union-attr]
    assert backend.cancel(rec.task_id) is status
    assert backend.spawn_retry(rec.task_id, attempt_of(rec, 2)) == 1  # a finished chain is not marked


def test_cancel_twice_reports_cancelled_the_second_time(backend: Backend):
    rec = record()
    backend.create([rec])
    assert backend.cancel(rec.task_id) is Status.INITIATED
    assert backend.cancel(rec.task_id) is Status.CANCELLED


def test_cancel_of_an_unknown_id_is_none(backend: Backend):
    assert backend.cancel("no-such-task") is None


def test_the_workers_late_outcomes_do_not_undo_a_cancel(backend: Backend):
    rec = record()
    move_to(backend, rec, Status.IN_PROGRESS)
    backend.cancel(rec.task_id)
    backend.transition(rec.task_id, Status.SUCCESS, result=42)
    backend.transition(rec.task_id, Status.FAILED, fail_error="E: late")
    started = backend.start(rec.task_id, "a-redelivery")
    assert started is not None and started.status is Status.CANCELLED  # the worker acks it unrun
    assert backend.get(rec.task_id).status is Status.CANCELLED  # type: ignore[union-attr]


def test_cancel_follows_the_chain_to_the_retry_waiting_and_stops_every_later_spawn(backend: Backend):
    original = record(retry=3)
    move_to(backend, original, Status.IN_PROGRESS)
    second = attempt_of(original, 2)
    assert backend.spawn_retry(original.task_id, second) == 2
    backend.transition(original.task_id, Status.FAILED, fail_error="E: first")
    assert backend.cancel(original.task_id) is Status.RETRY  # the attempt waiting for its countdown
    assert backend.get(second.task_id).status is Status.CANCELLED  # type: ignore[union-attr]
    assert backend.get(original.task_id).status is Status.FAILED  # type: ignore[union-attr]
    assert backend.spawn_retry(original.task_id, attempt_of(original, 3)) is None
    assert backend.get(original.task_id).retry == 2  # type: ignore[union-attr]


def test_cancel_by_a_retry_attempts_id_cancels_its_chain(backend: Backend):
    original = record(retry=3)
    move_to(backend, original, Status.IN_PROGRESS)
    second = attempt_of(original, 2)
    backend.spawn_retry(original.task_id, second)
    backend.transition(original.task_id, Status.FAILED, fail_error="E: first")
    backend.transition(second.task_id, Status.IN_PROGRESS)
    assert backend.cancel(second.task_id) is Status.IN_PROGRESS
    assert backend.get(second.task_id).status is Status.CANCELLED  # type: ignore[union-attr]
    assert backend.spawn_retry(original.task_id, attempt_of(original, 3)) is None


def test_a_running_attempt_cancelled_spawns_no_retry(backend: Backend):
    """The worker's failure after the interrupt (or a failure racing the cancel) finds the chain refused."""
    original = record(retry=3)
    move_to(backend, original, Status.IN_PROGRESS)
    backend.cancel(original.task_id)
    assert backend.spawn_retry(original.task_id, attempt_of(original, 2)) is None
    stored = backend.get(original.task_id)
    assert stored is not None and stored.retry == 3 and stored.latest_attempt_id in (None, original.task_id)


def test_cancel_racing_a_spawn_never_lets_the_chain_run_on(backend: Backend):
    """Threads spawn the retry while another cancels: whichever wins, the chain's latest attempt ends
    cancelled and no attempt is left to run."""
    for _ in range(20):
        original = record(retry=5)
        move_to(backend, original, Status.IN_PROGRESS)
        attempt = attempt_of(original, 2)
        go = threading.Barrier(2)

        def spawn(original=original, attempt=attempt, go=go) -> None:
            go.wait()
            backend.spawn_retry(original.task_id, attempt)

        spawner = threading.Thread(target=spawn)
        spawner.start()
        go.wait()
        assert backend.cancel(original.task_id) is not None
        spawner.join()
        stored = backend.get(original.task_id)
        assert stored is not None
        latest = backend.get(stored.latest_attempt_id or original.task_id)
        assert latest is not None and latest.status is Status.CANCELLED
        assert backend.spawn_retry(original.task_id, attempt_of(original, 3)) is None


def test_cancelled_among_names_only_the_cancelled(backend: Backend):
    running = [record() for _ in range(5)]
    for rec in running:
        move_to(backend, rec, Status.IN_PROGRESS)
    done = record()
    move_to(backend, done, Status.SUCCESS)
    assert backend.cancelled_among([]) == []
    assert backend.cancelled_among([r.task_id for r in running]) == []
    backend.cancel(running[1].task_id)
    backend.cancel(running[3].task_id)
    ids = [r.task_id for r in running] + [done.task_id, "no-such-task"]
    assert sorted(backend.cancelled_among(ids)) == sorted([running[1].task_id, running[3].task_id])


def test_a_cancelled_record_created_in_advance_is_kept(backend: Backend):
    """What a workflow's cancel does for a step not sent yet: the step's own create later changes nothing."""
    rec = record()
    backend.create([rec.evolve(status=Status.CANCELLED)])
    backend.create([rec])
    assert not backend.create_new(rec)
    assert backend.get(rec.task_id).status is Status.CANCELLED  # type: ignore[union-attr]
    assert backend.cancel(rec.task_id) is Status.CANCELLED


def test_multi_backend_cancels_on_every_backend():
    primary, secondary = MemoryBackend(), MemoryBackend()
    multi = MultiBackend([primary, secondary])
    rec = record()
    multi.create([rec])
    assert multi.cancel(rec.task_id) is Status.INITIATED
    assert secondary.get(rec.task_id).status is Status.CANCELLED  # type: ignore[union-attr]
    assert multi.cancelled_among([rec.task_id]) == [rec.task_id]
