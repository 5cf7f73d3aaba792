"""The status machine: ranks, finality, and the rule that lower or equal ranks are ignored."""

from __future__ import annotations

import itertools

import pytest

from cogman.status import FINAL, RANK, Status, allows, parse

ORDER = [Status.INITIATED, Status.QUEUED, Status.IN_PROGRESS, Status.SUCCESS]


def test_values_are_cogmans():
    values = ["initiated", "queued", "in_progress", "retry", "failed", "success", "cancelled"]
    assert [s.value for s in Status] == values


@pytest.mark.parametrize(("lower", "higher"), list(itertools.combinations(ORDER, 2)))
def test_moves_only_upward(lower, higher):
    assert allows(lower, higher)
    assert not allows(higher, lower)


@pytest.mark.parametrize("status", list(Status))
def test_equal_rank_is_ignored(status):
    assert not allows(status, status)


@pytest.mark.parametrize(("final", "other"), list(itertools.product(FINAL, list(Status))))
def test_final_states_never_move(final, other):
    assert not allows(final, other)


def test_failed_and_success_share_the_top_rank():
    assert RANK[Status.FAILED] == RANK[Status.SUCCESS] > RANK[Status.IN_PROGRESS]


def test_cancelled_is_final_and_wins_over_every_unfinished_status():
    assert Status.CANCELLED.is_final and RANK[Status.CANCELLED] == RANK[Status.SUCCESS]
    for unfinished in (Status.INITIATED, Status.RETRY, Status.QUEUED, Status.IN_PROGRESS):
        assert allows(unfinished, Status.CANCELLED)
    assert not allows(Status.CANCELLED, Status.SUCCESS) and not allows(Status.CANCELLED, Status.FAILED)


def test_a_retry_attempt_moves_like_a_first_one():
    """Both creation states are unconfirmed; a retry attempt is queued, then shows in_progress."""
    for creation in (Status.INITIATED, Status.RETRY):
        assert allows(creation, Status.QUEUED) and allows(creation, Status.IN_PROGRESS)
        assert allows(creation, Status.SUCCESS) and allows(creation, Status.FAILED)
    assert not allows(Status.RETRY, Status.INITIATED) and not allows(Status.INITIATED, Status.RETRY)
    assert not allows(Status.QUEUED, Status.RETRY) and not allows(Status.IN_PROGRESS, Status.RETRY)


def test_only_creation_states_start_a_record():
    assert allows(None, Status.INITIATED) and allows(None, Status.RETRY)
    assert not allows(None, Status.SUCCESS)


def test_parse_names_the_bad_value():
    assert parse("queued") is Status.QUEUED
    with pytest.raises(ValueError, match="'done'"):
        parse("done")


def test_every_worker_outcome_has_a_metrics_counter():
    from cogman.middleware.prometheus import OUTCOMES
    from cogman.worker.execution import Outcome

    assert set(OUTCOMES) == {outcome.value for outcome in Outcome}
