"""Handler threads' writes to Redis: each thread writing its own (cogman's way) against a group commit.

A worker's handler threads make two writes per task (``start``, then the outcome). ``plain`` is
``RedisBackend`` as it is: each thread sends its own EVALSHA on its own connection. ``group`` puts
:class:`GroupCommit` in front of it, the design cogman had until issue 19: the writes that meet go in
one pipeline. The group commit stranded writes (a thread could take a batch without its own write in it
and then wait without running it; issue 19, item 2); the class below has the protocol fixed
(tests/unit/test_bench_group_commit.py) so the comparison is of a correct one. Each round runs both,
alternating which goes first, on fresh records under a key prefix of its own, deleted after:

    python bench/group_commit.py --threads 8 --tasks 3000 --rounds 5

It prints the writes a second of each mode per round, how many writes a round trip carried, and the
medians. ``--work-us`` spins the CPU between a task's two writes, as a handler would.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.settings import REDIS_URL  # noqa: E402
from cogman import Config, Status  # noqa: E402
from cogman.backends.redis.backend import RedisBackend  # noqa: E402
from cogman.priority import Priority  # noqa: E402
from cogman.record import TaskRecord  # noqa: E402

MODES = ("group", "plain")
T = TypeVar("T")


class _Slot:
    """One write and its outcome; ``done`` is held until the write ran (a one-shot signal)."""

    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: Any) -> None:
        self.item = item
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    """``submit(item)`` returns what ``run`` gave for ``item``; writes queued at the same instant go in
    one ``run``. A thread always runs the batch it took, then waits for its own write if another thread
    took that one (the fix: the taker of a batch is the only one who will ever run it)."""

    def __init__(self, run: Callable[[Sequence[Any]], Sequence[T]]) -> None:
        self._run = run
        self._pending: list[_Slot] = []
        self._lock = threading.Lock()
        self.batches = 0
        self.items = 0

    def submit(self, item: Any) -> T:
        slot = _Slot(item)
        with self._lock:
            self._pending.append(slot)
        with self._lock:
            batch, self._pending = self._pending, []
            if batch:
                self.batches += 1
                self.items += len(batch)
        if batch:
            self._lead(batch)
        if slot not in batch:
            slot.done.acquire()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[no-any-return]

    def _lead(self, batch: list[_Slot]) -> None:
        try:
            results = self._run([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} writes gave {len(results)} results")
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        except BaseException as exc:
            for slot in batch:
                slot.error = exc
        finally:
            for slot in batch:
                slot.done.release()


def grouped(backend: RedisBackend) -> GroupCommit[Any]:
    """Route the backend's single-write calls (``start``, ``transition``) through a group commit."""

    def run(items: Sequence[tuple[Any, list[Any], str]]) -> list[Any]:
        if len(items) == 1:
            script, args, what = items[0]
            return [backend.buffer.write(backend._run(script, args), what)]
        pipe = backend.client.pipeline(transaction=False)
        for script, args, _ in items:
            pipe.evalsha(script.sha, 0, *args)
        return list(pipe.execute())

    for script in (backend._start, backend._transition):
        backend.client.script_load(script.script)  # a pipeline's NOSCRIPT would fail the whole batch
    group: GroupCommit[Any] = GroupCommit(run)
    backend._committed = lambda script, args, what: group.submit((script, args, what))  # type: ignore[method-assign]
    return group


def record(i: int) -> TaskRecord:
    task_id = str(uuid.uuid4())
    return TaskRecord(task_id, "bench.write", task_id, Priority.LOW, {"args": [i], "kwargs": {}})


def spin(microseconds: float) -> None:
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def one_run(url: str, mode: str, threads: int, tasks: int, work_us: float) -> tuple[float, float]:
    """(writes a second, writes per round trip) of ``threads`` threads each running ``tasks`` tasks."""
    config = Config(broker_url="memory://", backend_url=url, redis_prefix=f"gcbench{uuid.uuid4().hex}")
    backend = RedisBackend(url, config)
    group = grouped(backend) if mode == "group" else None
    try:
        shares: list[Sequence[TaskRecord]] = []
        for _ in range(threads):
            records = [record(i) for i in range(tasks)]
            backend.create(records)
            shares.append(records)
        barrier = threading.Barrier(threads + 1)
        failures: list[BaseException] = []

        def handler(records: Sequence[TaskRecord]) -> None:
            try:
                backend.get(records[0].task_id)  # this thread's connection open before the clock starts
                barrier.wait()
                for rec in records:
                    backend.start(rec.task_id)
                    if work_us:
                        spin(work_us)
                    backend.transition(rec.task_id, Status.SUCCESS, result=1, duration=0.001, returning=False)
            except BaseException as exc:
                failures.append(exc)

        workers = [threading.Thread(target=handler, args=(share,)) for share in shares]
        for worker in workers:
            worker.start()
        barrier.wait()
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - began
        if failures:
            raise failures[0]
        writes = 2 * threads * tasks
        return writes / elapsed, (group.items / group.batches if group and group.batches else 1.0)
    finally:
        for key in backend.client.scan_iter(f"{backend.prefix}:*", count=1000):
            backend.client.delete(key)
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=3000, help="tasks per thread (two writes each)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work-us", type=float, default=0.0, help="CPU spun between a task's two writes")
    parser.add_argument("--redis-url", default=REDIS_URL)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        order = MODES if round_ % 2 == 0 else MODES[::-1]
        for mode in order:
            rate, per_trip = one_run(args.redis_url, mode, args.threads, args.tasks, args.work_us)
            rates[mode].append(rate)
            print(f"round {round_ + 1} {mode:5}: {rate:8,.0f} writes/s ({per_trip:.3f} writes per round trip)")
    for mode in MODES:
        print(f"median {mode:5}: {statistics.median(rates[mode]):8,.0f} writes/s")


if __name__ == "__main__":
    main()
