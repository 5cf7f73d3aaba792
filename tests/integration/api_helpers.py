"""Running the API for real: uvicorn on a free port in a thread, and the test stacks (a real worker on
RabbitMQ, with Redis or mongomock behind it)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from cogman import App, AsyncResult, TaskFailed
from tests.admin_app import register
from tests.integration.rabbit_helpers import wait_for
from tests.integration.redis_helpers import drop_prefix
from tests.ports import free_ports


def free_port() -> int:
    return free_ports()


def wait_for_api(base: str) -> None:
    """Until ``cogman api`` started in another process answers ``/ping`` at ``base`` (60 s at most)."""
    import httpx

    def up() -> bool:
        try:
            return httpx.get(base + "/ping", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 60, "cogman api to answer", interval=0.2)


@contextmanager
def serving(asgi_app: Any) -> Iterator[str]:
    """``asgi_app`` served by uvicorn on 127.0.0.1; yields its base URL, stops it afterwards."""
    port = free_port()
    config = uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def closed_port() -> int:
    """A port nothing listens on (bound then released; nothing else on this machine takes it at once)."""
    return free_port()


def wait_until_final(results: list[Any], timeout: float = 60) -> None:
    """Wait until every result's chain is finished, successfully or not (TimeoutError otherwise)."""
    deadline = time.monotonic() + timeout
    for result in results:
        with contextlib.suppress(TaskFailed):
            result.get(timeout=max(0.1, deadline - time.monotonic()))


@dataclass
class Stack:
    """A worker app running a real worker, and a second app on the same broker and backend, as the API
    process would have."""

    worker_app: App
    api_app: App
    worker: Any
    backend_url: str
    options: dict[str, Any]

    def send(self, name: str, *args: Any, **options: Any) -> AsyncResult[Any]:
        return self.worker_app.send_task(name, args, **options)


@pytest.fixture(params=["redis", "mongomock"])
def backend_options(request: pytest.FixtureRequest, redis_url: str) -> Iterator[dict[str, Any]]:
    """Each test once on Redis (its own key prefix) and once on mongomock (its own database)."""
    if request.param == "redis":
        prefix = f"apitest-{uuid.uuid4().hex[:8]}"
        yield {"backend": redis_url, "redis_prefix": prefix}
        drop_prefix(redis_url, prefix)
    else:
        yield {"backend": f"mongomock://apitest-{uuid.uuid4().hex[:8]}"}


@pytest.fixture
def stack(rabbit: str, backend_options: dict[str, Any]) -> Iterator[Stack]:
    worker_app = register(App("admin", broker=rabbit, **backend_options))
    api_app = register(App("admin", broker=rabbit, **backend_options))
    worker = worker_app.start_background(concurrency=4)
    try:
        yield Stack(worker_app, api_app, worker, backend_options["backend"], backend_options)
    finally:
        worker.stop()
        worker_app.close()
        api_app.close()
