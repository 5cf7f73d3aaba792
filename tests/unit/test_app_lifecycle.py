"""App limits and lifecycle without services: the message size check, closing once, at exit, and GC."""

from __future__ import annotations

import atexit
import gc
import weakref

import pytest

from cogman import App
from cogman.backends.base import TaskQuery
from cogman.errors import MessageTooLarge


def test_a_message_over_max_message_size_is_refused_before_anything_is_recorded():
    app = App("limits", broker="memory://", backend="memory://", max_message_size=2000)

    @app.task(name="limits.big")
    def big(text: str) -> int:
        return len(text)

    with pytest.raises(MessageTooLarge, match=r"task limits\.big: its message is \d+ bytes .*max_message_size=2000"):
        big.delay("x" * 2000)
    with pytest.raises(ValueError, match="max_message_size"):  # a ValueError, like other bad input
        app.send_many("limits.big", [(("small",), {}), (("x" * 5000,), {})])

    assert app.backend.query(TaskQuery(limit=10)).total == 0  # not even the small one of the batch
    assert app.broker.depth() == 0  # type: ignore[attr-defined]
    big.delay("x" * 1000)  # under the limit: recorded and sent as usual
    assert app.backend.query(TaskQuery(limit=10)).total == 1
    app.close()


def test_close_runs_once_and_leaves_nothing_registered_at_exit(monkeypatch: pytest.MonkeyPatch):
    registered: list = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(atexit, "unregister", registered.remove)
    app = App("once", broker="memory://", backend="memory://")
    closes: list[str] = []
    monkeypatch.setattr(app.broker, "close", lambda: closes.append("broker"))
    assert len(registered) == 1

    app.close()
    app.close()

    assert closes == ["broker"]
    assert registered == []


def test_interpreter_exit_closes_an_app_still_open(monkeypatch: pytest.MonkeyPatch):
    registered: list = []
    monkeypatch.setattr(atexit, "register", registered.append)
    app = App("open", broker="memory://", backend="memory://")
    closes: list[str] = []
    monkeypatch.setattr(app.broker, "close", lambda: closes.append("broker"))

    (at_exit,) = registered
    at_exit()

    assert closes == ["broker"]


def test_an_app_that_connected_can_still_be_garbage_collected(monkeypatch: pytest.MonkeyPatch):
    registered: list = []
    monkeypatch.setattr(atexit, "register", registered.append)
    app = App("dropped", broker="memory://", backend="memory://")
    app.send_task("dropped.noop")
    dropped = weakref.ref(app)
    del app
    gc.collect()

    assert dropped() is None
    (at_exit,) = registered
    at_exit()  # the app is gone: nothing to close, nothing raised
