"""A pytest plugin for testing your own tasks, registered as the ``pytest11`` entry point ``cogman``.

Fixtures:

* ``cogman_app``: your app (``--cogman-app module:attr`` or the ``cogman_app`` ini option), switched to
  the in-process memory:// broker and backend for the test, or a fresh empty App when none is named;
* ``cogman_worker``: a worker of that app running in background threads, stopped after the test.

``app.join()`` then waits for everything sent, and ``App(..., eager=True)`` (``COGMAN_EAGER=1``) runs
each send inline. docs/testing.md has a worked example.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cogman.app import App
from cogman.worker.worker import Worker


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cogman-app", default=None, help="the app the cogman_app fixture uses, as module:attr")
    parser.addini("cogman_app", "the app the cogman_app fixture uses, as module:attr", default="")


@pytest.fixture
def cogman_app(request: pytest.FixtureRequest) -> Iterator[App]:
    path = request.config.getoption("--cogman-app") or request.config.getini("cogman_app")
    if not path:
        app = App("cogman-test", broker="memory://", backend="memory://")
        yield app
        app.close()
        return
    from cogman.cli.main import load_app

    app = load_app(str(path))
    saved = app.config
    app.reconfigure(broker_url="memory://", backend_url="memory://", eager=False)
    try:
        yield app
    finally:
        app.reconfigure(config=saved)


@pytest.fixture
def cogman_worker(cogman_app: App) -> Iterator[Worker]:
    worker = cogman_app.start_background(concurrency=2)
    yield worker
    worker.stop()
