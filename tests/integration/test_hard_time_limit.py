"""The hard time limit of ``--processes`` (issue 19, item 9): a blocking call in C that the soft
``time_limit`` cannot interrupt is stopped by ending its worker process, on RabbitMQ and Redis."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogman import App, TaskFailed
from cogman.status import Status
from tests.integration.hard_limit_app import read_runs
from tests.integration.rabbit_helpers import consumer_count, wait_for, worker_process
from tests.integration.redis_helpers import drop_prefix

HARD = "HardTimeLimitExceeded: hard time limit exceeded (1 s + 1 s grace): its worker process was ended"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def client(rabbit: str, redis_url: str) -> Iterator[tuple[App, dict[str, str]]]:
    """A client app and the environment of the worker processes: same vhost, same Redis key prefix."""
    prefix = f"hard-{uuid.uuid4().hex[:8]}"
    app = App("hard-client", broker=rabbit, backend=redis_url, redis_prefix=prefix)
    yield app, {"COGMAN_BROKER_URL": rabbit, "COGMAN_BACKEND_URL": redis_url, "COGMAN_TEST_PREFIX": prefix}
    app.close()
    drop_prefix(redis_url, prefix)


def test_a_blocking_call_past_its_hard_limit_ends_its_process_and_is_retried_once(
    rabbit: str, client: tuple[App, dict[str, str]], tmp_path: Path
):
    """``time.sleep(30)`` under ``time_limit=1`` (grace 1 s), retry=1: each attempt is recorded failed
    with the hard limit's error and its process is killed and replaced; the body ran exactly twice,
    each redelivered message was acked unrun, and the worker runs other tasks on. The same for an
    async handler that blocks its event loop. A child that dies of something else still stops the
    supervisor."""
    app, env = client
    runs, log = tmp_path / "runs.log", tmp_path / "worker.log"
    env = {**env, "COGMAN_TEST_RUN_LOG": str(runs)}
    parent = worker_process("tests.integration.hard_limit_app", env, "--processes", "2", "-c", "2", "-l", "info",
                            log=log)  # fmt: skip
    try:
        result = app.send_task("hard.sleep", args=(30,), retry=1)
        with pytest.raises(TaskFailed) as failed:
            result.get(timeout=120)  # the soft limit alone would take 2 x 30 s, and fail otherwise
        assert HARD in str(failed.value)
        first = app.backend.get(result.id)
        assert first is not None and first.latest_attempt_id is not None
        second = app.backend.get(first.latest_attempt_id)
        assert second is not None
        assert [(r.status, r.fail_error) for r in (first, second)] == [(Status.FAILED, HARD)] * 2

        killed = read_runs(str(runs))
        assert len(killed) == 2 and len(set(killed)) == 2  # each attempt ended the process it ran in

        blocked = app.send_task("hard.block_loop", args=(30,))  # an async handler blocking its event loop
        with pytest.raises(TaskFailed, match="HardTimeLimitExceeded: hard time limit exceeded"):
            blocked.get(timeout=120)

        wait_for(lambda: not any(alive(pid) for pid in killed), 30, "the overrun processes to be gone")
        wait_for(lambda: consumer_count(rabbit, "high_priority_queue_0") == 2, 60, "two replacement consumers")
        skipped = "already failed; acking its redelivery without running it"
        wait_for(lambda: log.read_text().count(skipped) == 3, 60, "the redelivered messages to be acked unrun")
        pids = {app.send_task("hard.pid").get(timeout=60) for _ in range(4)}  # time-limited, in time: not ended
        assert parent.poll() is None and pids.isdisjoint(killed) and parent.pid not in pids
        assert log.read_text().count("was ended for a hard time limit; started worker process") == 3

        os.kill(next(iter(pids)), signal.SIGKILL)  # not ended by the supervisor: a fault, as before
        assert parent.wait(60) == 1
    finally:
        if parent.poll() is None:
            parent.send_signal(signal.SIGTERM)
            parent.wait(60)
    assert read_runs(str(runs)) == killed  # no third run
