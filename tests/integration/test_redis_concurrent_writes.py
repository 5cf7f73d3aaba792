"""Handler threads writing to Redis at the same moment, each on its own connection (issue 19, item 2).

The group commit that sent concurrent writes together could strand one, its thread then waiting forever
with the record ``in_progress`` and the delivery never acked; it was removed (bench/group_commit.py).
Here eight threads make a worker's two writes for hundreds of tasks each: every call returns, within a
bound that only a hang reaches, and every reply is the caller's own (never another thread's record).
"""

from __future__ import annotations

import threading
import time

import redis

from cogman import Config, Status
from cogman.backends.base import TaskQuery
from cogman.backends.redis.backend import RedisBackend
from tests.integration.test_backend_contract import record

THREADS = 8
TASKS = 400  # each
#: Far above what the run needs (a few seconds on a busy machine): reaching it means a thread hangs.
HANG = 120.0


def test_concurrent_handler_writes_all_return_each_with_its_own_reply(redis_url: str):
    redis.Redis.from_url(redis_url).flushdb()
    backend = RedisBackend(redis_url, Config(broker_url="memory://", backend_url=redis_url))
    try:
        shares = [[record() for _ in range(TASKS)] for _ in range(THREADS)]
        for share in shares:
            backend.create(share)
        barrier = threading.Barrier(THREADS)
        wrong: list[str] = []
        errors: list[BaseException] = []

        def handler(index: int) -> None:
            try:
                barrier.wait(30)
                for rec in shares[index]:
                    started = backend.start(rec.task_id)
                    if started is None or started.original_task_id != rec.task_id:
                        wrong.append(f"start {rec.task_id}: {started}")
                    done = backend.transition(rec.task_id, Status.SUCCESS, result=rec.task_id, duration=0.01)
                    got = None if done is None else (done.task_id, done.result, done.status)
                    if got != (rec.task_id, rec.task_id, Status.SUCCESS):
                        wrong.append(f"success {rec.task_id}: {done}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=handler, args=(i,), daemon=True) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + HANG
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert [t.name for t in threads if t.is_alive()] == [], "handler threads never got their writes back"
        assert errors == [] and wrong == []
        assert backend.query(TaskQuery(status=Status.SUCCESS, limit=0)).total == THREADS * TASKS
    finally:
        backend.close()
