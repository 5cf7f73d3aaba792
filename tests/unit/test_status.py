"""The status machine: ranks, finality, and the rule that lower or equal ranks are ignored."""

from __future__ import annotations

import itertools

import pytest

from cogman.status import FINAL, RANK, Status, allows, parse

ORDER = [Status.INITIATED, Status.QUEUED, Status.IN_PROGRESS, Status.RETRY]


def test_values_are_cogmans():
    assert [s.value for s in Status] == ["initiated", "queued", "in_progress", "retry", "failed", "success"]


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
    assert RANK[Status.FAILED] == RANK[Status.SUCCESS] > RANK[Status.RETRY]


def test_retry_attempt_jumps_straight_to_a_final_state():
    assert not allows(Status.RETRY, Status.IN_PROGRESS)
    assert allows(Status.RETRY, Status.SUCCESS) and allows(Status.RETRY, Status.FAILED)


def test_only_creation_states_start_a_record():
    assert allows(None, Status.INITIATED) and allows(None, Status.RETRY)
    assert not allows(None, Status.SUCCESS)


def test_parse_names_the_bad_value():
    assert parse("queued") is Status.QUEUED
    with pytest.raises(ValueError, match="'done'"):
        parse("done")
