"""OneShot (cogman/brokers/base.py): a receipt's and a hand-off's "done", an Event made only when a waiter
needs one. Every way a waiter and the setter can meet ends with the waiter told."""

from __future__ import annotations

import threading

from cogman.brokers.base import OneShot, Receipt


def test_a_flag_set_before_anyone_waits_answers_at_once_and_makes_no_event():
    flag = OneShot()
    flag.set()
    assert flag.is_set() and flag.wait(0) and flag.wait()
    assert flag._event is None


def test_a_wait_that_times_out_says_so_and_a_later_set_still_wakes_the_next_waiter():
    flag = OneShot()
    assert flag.wait(0.01) is False and not flag.is_set()
    woken = threading.Event()
    waiter = threading.Thread(target=lambda: flag.wait(30) and woken.set())
    waiter.start()
    flag.set()
    waiter.join(30)
    assert woken.is_set() and flag.is_set()


def wait_all(flag: OneShot, arrived: threading.Barrier, results: list[bool]) -> None:
    arrived.wait()
    results.append(flag.wait(30))


def test_many_waiters_racing_one_set_are_all_woken():
    for _ in range(50):
        flag, arrived = OneShot(), threading.Barrier(9)
        results: list[bool] = []
        waiters = [threading.Thread(target=wait_all, args=(flag, arrived, results)) for _ in range(8)]
        for thread in waiters:
            thread.start()
        arrived.wait()
        flag.set()
        for thread in waiters:
            thread.join(30)
        assert results == [True] * 8


def test_a_receipt_settles_its_waiters_and_its_callbacks_once():
    receipt, called = Receipt(2), []
    receipt.add_done_callback(called.append)
    assert not receipt.done and receipt.wait(0.01) is False
    receipt.settle()
    assert not receipt.done and called == []
    receipt.settle()
    assert receipt.done and receipt.wait(0) and called == [None]
    receipt.settle()  # a late settle changes nothing
    assert called == [None]
