"""bench/group_commit.py's GroupCommit, the design cogman replaced, under many threads: every write runs
once, every caller gets its own result, nobody hangs; so the benchmark compares against a correct one.

Issue 19 found cogman's group commit stranding a write: a thread took a batch holding only another
thread's write, then waited for its own and never ran what it had taken (7 of 8 threads blocked after
450,298 submits). The lock here hands the GIL on after each release, so the interleavings that stranded
a write come within the first few dozen submits (the unfixed protocol: 8 of 8 threads hung after 13).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType

import pytest

from bench.group_commit import GroupCommit

THREADS = 8
SUBMITS = 3_000  # each
#: A bound on the whole run, far above what it needs (about a second): reaching it means a thread hangs.
HANG = 60.0


class YieldingLock:
    """A lock that hands the GIL to another thread after each release, so the moments between two
    critical sections of one ``submit`` are where other threads run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._lock.release()
        time.sleep(0)


@pytest.fixture
def busy_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_many_threads_submitting_never_strand_a_write(busy_switching: None) -> None:
    ran: list[int] = []
    ran_lock = threading.Lock()

    def run(items: Sequence[int]) -> list[int]:
        with ran_lock:
            ran.extend(items)
        return [item * 2 for item in items]

    group: GroupCommit[int] = GroupCommit(run)
    group._lock = YieldingLock()  # type: ignore[assignment]
    wrong: list[tuple[int, object]] = []
    errors: list[BaseException] = []

    def submitter(base: int) -> None:
        try:
            for item in range(base, base + SUBMITS):
                got = group.submit(item)
                if got != item * 2:
                    wrong.append((item, got))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submitter, args=(n * SUBMITS,), daemon=True) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + HANG
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"{len(hung)} of {THREADS} threads never got their write back; {len(ran)} writes ran"
    assert errors == [] and wrong == []
    assert sorted(ran) == list(range(THREADS * SUBMITS))  # each write ran exactly once
    assert group.items == THREADS * SUBMITS and group.batches < group.items  # and some did go together
