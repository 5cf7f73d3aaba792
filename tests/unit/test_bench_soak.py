"""bench/soak.py's verdict: what counts as a lost task, and which second runs a killed worker explains."""

from __future__ import annotations

from bench.soak import judge

ACCEPTED = {1: "t1", 2: "t2", 3: "t3", 4: "t4"}
ALL_SUCCESS = dict.fromkeys(ACCEPTED.values(), "success")


def test_every_accepted_task_run_and_recorded_success_is_ok():
    verdict = judge(ACCEPTED, dict.fromkeys(ACCEPTED, 1), ALL_SUCCESS, {}, killed=set())
    assert verdict.ok
    assert (verdict.lost, verdict.unfinished, verdict.duplicates) == ([], [], [])


def test_an_accepted_task_that_never_ran_is_lost_even_when_its_record_says_success():
    runs = {1: 1, 2: 1, 4: 1}
    verdict = judge(ACCEPTED, runs, ALL_SUCCESS, {}, killed=set())
    assert not verdict.ok
    assert verdict.lost == [3]


def test_a_task_that_ran_but_is_not_recorded_success_fails_the_soak():
    statuses = {**ALL_SUCCESS, "t2": "in_progress"}
    verdict = judge(ACCEPTED, dict.fromkeys(ACCEPTED, 1), statuses, {}, killed=set())
    assert not verdict.ok
    assert verdict.unfinished == [2]


def test_a_second_run_is_explained_only_by_an_earlier_run_in_a_killed_worker():
    runs = {1: 2, 2: 2, 3: 3, 4: 1}
    runners = {
        1: [100, 200],  # first run in 100, killed: explained
        2: [200, 100],  # only the last run was in the killed one: not explained
        3: [200, 100, 300],  # an earlier run in 100: explained
    }
    verdict = judge(ACCEPTED, runs, ALL_SUCCESS, runners, killed={100})
    assert verdict.ok  # duplicates are allowed (at-least-once), only reported
    assert verdict.duplicates == [1, 2, 3]
    assert verdict.unexplained == [2]
