"""Shared fixtures. Tests of real services fail (never skip) when the service is not reachable."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from cogman import App
from tests.service_lock import services

RABBITMQ_URL = os.environ.get("COGMAN_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("COGMAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

START_HINT = {
    5672: "start it with: rabbitmq-server -detached",
    6379: 'start it with: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no',
}


def require_service(port: int, name: str) -> None:
    """Fail the test (not skip) when a service the suite needs is down: CI must go red, not quiet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return
    except OSError as exc:
        pytest.fail(f"{name} is not reachable on 127.0.0.1:{port} ({exc}); {START_HINT.get(port, '')}", pytrace=False)


@pytest.fixture(autouse=True)
def _service_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Disruptive tests (broker stops, Redis shutdowns, alarms) run alone among concurrent suites."""
    with services(exclusive=request.node.get_closest_marker("disruptive") is not None):
        yield


@pytest.fixture
def rabbitmq_url() -> str:
    require_service(5672, "RabbitMQ")
    return RABBITMQ_URL


@pytest.fixture
def redis_url() -> str:
    require_service(6379, "Redis")
    return REDIS_URL


@pytest.fixture
def app() -> Iterator[App]:
    """An embedded app: memory broker and backend."""
    application = App("test", broker="memory://", backend="memory://")
    yield application
    application.close()
