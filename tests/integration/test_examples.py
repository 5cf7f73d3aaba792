"""examples/ run as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_runs():
    done = subprocess.run(
        [sys.executable, "examples/quickstart.py"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "add: 5" in done.stdout
    assert "flaky: hello after 3 attempts | status: success" in done.stdout
    assert "broken: ValueError: this one always fails" in done.stdout


def test_distributed_example_with_a_worker_process(rabbit: str, redis_url: str):
    """The two-process example, pointed at the test vhost and Redis database by its env vars."""
    import os
    import signal

    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COGMAN_BROKER_URL": rabbit, "COGMAN_BACKEND_URL": redis_url}
    worker = subprocess.Popen(
        [sys.executable, "-m", "cogman", "-A", "examples.distributed", "worker", "-c", "2"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "examples.distributed"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        squares = [i * i for i in range(10)]
        assert done.stdout.strip() == str([*squares, sum(map(ord, "cogman"))])
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
