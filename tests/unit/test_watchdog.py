"""The time-limit watchdog's memory: finished watches are dropped even while a long one runs ahead of
them, so what runs beside a long task costs nothing that lasts (issue 19, item 8)."""

from __future__ import annotations

import threading
import time

import pytest

from cogman.errors import TimeLimitExceeded
from cogman.worker import limits


def test_finished_watches_behind_a_long_one_are_not_kept():
    """One call under ``time_limit=3600`` runs while 100k short ones come and go under the same limit:
    their deadlines come after the long one's, so they are behind it in the heap. The watchdog holds a
    bounded number of entries, not one per finished call."""
    watchdog = limits._watchdog()
    started, release = threading.Event(), threading.Event()

    def long() -> None:
        started.set()
        release.wait(60)

    runner = threading.Thread(target=limits.call, args=(3600, long), name="long-task")
    runner.start()
    try:
        assert started.wait(10)
        for _ in range(100_000):
            assert limits.call(3600, int) == 0
        held = len(watchdog)
        assert held <= 2 + limits.COMPACT_SLACK, f"{held} watches held for 1 running"
    finally:
        release.set()
        runner.join(10)
    assert not runner.is_alive()
    assert len(watchdog) <= limits.COMPACT_SLACK


def test_a_limit_still_fires_after_the_heap_was_rebuilt():
    """Dropping finished watches keeps the running ones: a call started before the rebuild is still
    interrupted at its limit."""
    watchdog = limits._watchdog()
    looping = threading.Event()
    outcome: list[BaseException] = []

    def spin() -> None:
        looping.set()
        while True:  # pure Python: the interrupt lands at once
            time.monotonic()

    def limited() -> None:
        try:
            limits.call(0.5, spin)
        except TimeLimitExceeded as exc:
            outcome.append(exc)

    runner = threading.Thread(target=limited, name="limited")
    runner.start()
    assert looping.wait(10)
    for _ in range(10 * limits.COMPACT_SLACK):  # several rebuilds while it runs
        limits.call(3600, int)
    runner.join(30)
    assert not runner.is_alive()
    assert len(outcome) == 1 and str(outcome[0]) == "time limit exceeded (0.5 s)"
    assert len(watchdog) <= 2 * 1 + limits.COMPACT_SLACK
    with pytest.raises(TimeLimitExceeded):
        limits.call(0.01, time.sleep, 0.2)
