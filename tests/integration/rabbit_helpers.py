"""Helpers for the tests against the real RabbitMQ on 127.0.0.1: a private vhost, queue inspection,
stopping and starting the broker (always started again), and waiting on external state.

The tests run in their own vhost, ``cogman_test`` (``$COGMAN_TEST_VHOST``), so they never touch queues of
another suite, and
every test starts from deleted queues. Stopping the broker (``rabbitmqctl stop_app``) stops every vhost:
``broker_stopped`` restarts it in a ``finally`` and waits until it accepts AMQP connections again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from kombu import Connection

from cogman.brokers.base import DEAD_LETTER_QUEUE, queue_names
from cogman.brokers.rabbitmq.delay_ladder import level_name
from cogman.delays import LEVELS
from cogman.priority import Priority
from tests.service_lock import require_exclusive

VHOST = os.environ.get("COGMAN_TEST_VHOST", "cogman_test")
ROOT = Path(__file__).resolve().parents[2]
#: Every queue name a test may create (the tests use at most 4 queues per family), the delay ladder's too.
LADDER_QUEUES = [level_name(level) for level in range(LEVELS)]
ALL_QUEUES = [*queue_names(Priority.HIGH, 4), *queue_names(Priority.LOW, 4), DEAD_LETTER_QUEUE, *LADDER_QUEUES]


def rabbitmqctl(*args: str, check: bool = True) -> str:
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def vhost_url(base_url: str) -> str:
    """``base_url`` with its vhost replaced by the test vhost, created (with guest's permissions) if new."""
    user = urlsplit(base_url).username or "guest"
    existing = rabbitmqctl("list_vhosts", "--formatter", "json")
    if VHOST not in {v["name"] for v in json.loads(existing)}:
        rabbitmqctl("add_vhost", VHOST)
    rabbitmqctl("set_permissions", "-p", VHOST, user, ".*", ".*", ".*")
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{VHOST}", "", ""))


def reset_queues(url: str) -> None:
    """Delete every queue cogman may have declared in the test vhost (whatever their arguments)."""
    with Connection(url, connect_timeout=5) as connection:
        channel = connection.channel()
        for name in ALL_QUEUES:
            channel.queue_delete(name)


def list_queues() -> dict[str, dict[str, Any]]:
    """Queues of the test vhost as rabbitmqctl reports them, arguments as a plain dict."""
    out = rabbitmqctl(
        "list_queues", "-p", VHOST, "name", "durable", "auto_delete", "exclusive", "arguments", "type",
        "--formatter", "json",
    )  # fmt: skip
    queues = {}
    for row in json.loads(out):
        row["arguments"] = {name: value for name, _type, value in row["arguments"]}
        queues[row["name"]] = row
    return queues


def depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (passive declare: the queue must exist)."""
    with Connection(url, connect_timeout=5) as connection:
        _, count, _ = connection.channel().queue_declare(queue, passive=True)
        return int(count)


def consumer_count(url: str, queue: str) -> int:
    with Connection(url, connect_timeout=5) as connection:
        _, _, consumers = connection.channel().queue_declare(queue, passive=True)
        return int(consumers)


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll external state until ``condition()`` is truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def broker_up(url: str) -> bool:
    try:
        with Connection(url, connect_timeout=2) as connection:
            connection.connect()
            connection.channel().close()
        return True
    except Exception:
        return False


def stop_broker() -> None:
    require_exclusive("rabbitmqctl stop_app")
    rabbitmqctl("stop_app")


def start_broker(url: str) -> None:
    rabbitmqctl("start_app")
    wait_for(lambda: broker_up(url), 120, "RabbitMQ to accept connections again", interval=0.2)


@contextmanager
def broker_stopped(url: str) -> Iterator[None]:
    """RabbitMQ stopped for the body; started again (and awaited) whatever happens."""
    stop_broker()
    try:
        yield
    finally:
        start_broker(url)


def worker_process(app_path: str, env: dict[str, str], *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``python -m cogman -A app_path worker ...`` as a child process, run from the project root."""
    environment = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    output = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "cogman", "-A", app_path, "worker", *args],
        cwd=ROOT,
        env=environment,
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def figures(name: str, **values: object) -> None:
    """Print a scenario's figures (pytest -s shows them; docs/reliability.md quotes the last run)."""
    line = " ".join(f"{key}={value}" for key, value in values.items())
    print(f"\n[figures] {name}: {line}")
    out = os.environ.get("COGMAN_FIGURES_FILE")
    if out:
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"scenario": name, **values}) + "\n")


def require_rabbitmqctl() -> None:
    try:
        rabbitmqctl("status")
    except (OSError, RuntimeError) as exc:
        pytest.fail(f"rabbitmqctl is needed to run the RabbitMQ tests: {exc}", pytrace=False)


class CountingLoad:
    """A task that counts its runs per index, and a thread sending ``total`` of them through ``.delay()``;
    ``marked`` is set once ``mark`` have been sent. For the fault tests that break the broker mid-run."""

    def __init__(self, app: Any, name: str, total: int, mark: int) -> None:
        self.runs: Counter[int] = Counter()
        self.results: list[Any] = []
        self.marked = threading.Event()
        lock = threading.Lock()

        @app.task(name=name)
        def count(index: int) -> int:
            with lock:
                self.runs[index] += 1
            return index

        def send() -> None:
            for index in range(total):
                self.results.append(count.delay(index))
                if index == mark:
                    self.marked.set()

        self.sender = threading.Thread(target=send, name="fault-test-sender")

    @property
    def duplicated(self) -> int:
        return sum(n - 1 for n in self.runs.values())
