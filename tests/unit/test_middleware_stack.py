"""MiddlewareStack calls a hook only on the middleware that define it, in order, and keeps its table of
hooks right when the list changes (cogman/middleware/base.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from cogman.middleware.base import Middleware, MiddlewareStack


class Recorder(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls

    def before_send(self, message: Any) -> None:
        self.calls.append(f"{self.name}.before_send({message})")

    def after_send(self, message: Any) -> None:
        self.calls.append(f"{self.name}.after_send({message})")


class Broken(Middleware):
    def before_send(self, message: Any) -> None:
        raise RuntimeError("exporter down")


def test_before_hooks_run_in_order_after_hooks_in_reverse_and_undefined_hooks_call_nothing() -> None:
    calls: list[str] = []
    stack = MiddlewareStack([Recorder("a", calls), Middleware(), Recorder("b", calls)])
    stack.before("before_send", 1)
    stack.after("after_send", 1)
    stack.before("before_execute", 1)  # nobody defines it
    assert calls == ["a.before_send(1)", "b.before_send(1)", "b.after_send(1)", "a.after_send(1)"]


@pytest.mark.parametrize(
    "change",
    [
        lambda stack, m: stack.middleware.append(m),
        lambda stack, m: stack.middleware.insert(0, m),
        lambda stack, m: stack.middleware.extend([m]),
        lambda stack, m: stack.middleware.__setitem__(0, m),
        lambda stack, m: setattr(stack, "middleware", [m]),
    ],
    ids=["append", "insert", "extend", "setitem", "assign"],
)
def test_a_middleware_added_after_the_first_call_is_called(change: Any) -> None:
    calls: list[str] = []
    stack = MiddlewareStack([Middleware()])
    stack.before("before_send", 1)  # builds the table: nobody
    change(stack, Recorder("late", calls))
    stack.before("before_send", 2)
    assert calls == ["late.before_send(2)"]


def test_a_removed_middleware_is_no_longer_called() -> None:
    calls: list[str] = []
    gone = Recorder("gone", calls)
    stack = MiddlewareStack([gone])
    stack.before("before_send", 1)
    stack.middleware.remove(gone)
    stack.before("before_send", 2)
    assert calls == ["gone.before_send(1)"]


def test_a_hook_set_on_an_instance_is_called() -> None:
    calls: list[str] = []
    middleware = Middleware()
    middleware.before_send = lambda message: calls.append(f"instance({message})")  # type: ignore[method-assign]
    MiddlewareStack([middleware]).before("before_send", 3)
    assert calls == ["instance(3)"]


def test_a_hook_that_raises_is_logged_and_the_next_one_still_runs(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    stack = MiddlewareStack([Broken(), Recorder("after", calls)])
    with caplog.at_level(logging.ERROR, logger="cogman.middleware"):
        stack.before("before_send", 1)
    assert calls == ["after.before_send(1)"]
    assert "middleware Broken failed in before_send" in caplog.text
