"""Fixtures for the integration tests that need the real RabbitMQ (see rabbit_helpers.py)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cogman import App
from tests.integration.rabbit_helpers import broker_up, rabbitmqctl, require_rabbitmqctl, reset_queues, vhost_url
from tests.integration.redis_helpers import drop_prefix
from tests.integration.tcp_proxy import TcpProxy
from tests.ports import free_ports


@pytest.fixture(scope="session")
def rabbit_vhost_url() -> str:
    """The test vhost on the local RabbitMQ, created once per session."""
    from tests.conftest import RABBITMQ_URL
    from tests.service_lock import services

    with services(exclusive=False):  # not while another suite's disruptive test has RabbitMQ stopped
        require_rabbitmqctl()
        return vhost_url(RABBITMQ_URL)


@pytest.fixture
def rabbit(rabbitmq_url: str, rabbit_vhost_url: str) -> Iterator[str]:
    """An AMQP URL to a vhost with no cogman queue in it; the broker is left running afterwards."""
    reset_queues(rabbit_vhost_url)
    yield rabbit_vhost_url
    if not broker_up(rabbit_vhost_url):  # a test failed between stop_app and start_app
        rabbitmqctl("start_app")
    reset_queues(rabbit_vhost_url)


@pytest.fixture
def rabbit_app(rabbit: str) -> Iterator[Callable[..., App]]:
    """``rabbit_app(**options)``: an App on the test vhost with a memory backend; all closed afterwards."""
    apps: list[App] = []

    def make(name: str = "rabbit", broker: str | None = None, backend: str | None = None, **options: Any) -> App:
        app = App(name, broker=broker or rabbit, backend=backend or "memory://", **options)
        apps.append(app)
        return app

    yield make
    for app in reversed(apps):
        app.close()


@pytest.fixture
def worker_env(rabbit: str, redis_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a worker process started by a test: the test vhost, the test Redis under a prefix
    of its own (dropped afterwards), and a file where the test apps log each run of a task body."""
    prefix = f"cogman-test-{uuid.uuid4().hex[:8]}"
    yield {
        "COGMAN_BROKER_URL": rabbit,
        "COGMAN_BACKEND_URL": redis_url,
        "COGMAN_TEST_PREFIX": prefix,
        "COGMAN_TEST_RUN_LOG": str(tmp_path / "runs.log"),
    }
    drop_prefix(redis_url, prefix)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A TCP proxy in front of the test RabbitMQ, to kill connections as a dying server or network would."""
    from tests.conftest import RABBITMQ_URL

    port = int(RABBITMQ_URL.rsplit(":", 1)[1].split("/", 1)[0])
    tcp = TcpProxy(port)
    tcp.start()
    yield tcp
    tcp.kill()


# The operator tests' stacks (issue 10): a real worker on RabbitMQ with Redis or mongomock behind it.
from tests.integration.api_helpers import backend_options, stack  # noqa: E402, F401

# The delay and retry-control tests (issue 11): an App on RabbitMQ with its own Redis key prefix.
from tests.integration.scheduling_helpers import scheduled_app  # noqa: E402, F401


@pytest.fixture
def private_redis() -> Iterator[tuple[str, redis.Redis]]:
    """A throwaway redis-server on a free port (below the ephemeral range: tests/ports.py), for tests that
    stop, freeze or MONITOR it; killed after the test. The shared Redis is never touched."""
    port = free_ports()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd="/tmp",
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 30
        while not _pings(client):
            assert time.monotonic() < deadline, "the private redis-server did not start"
            time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0", client
    finally:
        process.kill()
        process.wait(30)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
