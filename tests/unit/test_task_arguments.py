"""Arguments checked against the handler's signature at ``.delay()`` and by the worker: a keyword the
handler does not take is named, before any missing argument."""

from __future__ import annotations

from typing import Any

import pytest

from cogman import App, TaskContext
from cogman.errors import PoisonMessage


@pytest.fixture
def app() -> App:
    return App("args", broker="memory://", backend="memory://")


def test_an_unexpected_keyword_is_named_before_a_missing_argument(app: App):
    @app.task(name="args.resize")
    def resize(width: int, height: int) -> int:
        return width * height

    with pytest.raises(PoisonMessage, match=r"unexpected keyword argument 'z'$"):
        resize.check_arguments((), {"width": 1, "z": 2})  # 'height' is missing too
    with pytest.raises(TypeError, match=r"arguments do not fit args.resize: got an unexpected keyword argument 'z'"):
        resize.delay(width=1, z=2)  # type: ignore[call-arg]


def test_several_unexpected_keywords_are_all_named(app: App):
    @app.task(name="args.one")
    def one(a: int) -> int:
        return a

    with pytest.raises(PoisonMessage, match=r"unexpected keyword arguments 'y', 'z'$"):
        one.check_arguments((1,), {"y": 1, "z": 2})


def test_what_the_handler_takes_still_binds(app: App):
    @app.task(name="args.kw")
    def kw(a: int, *, scale: float = 1.0) -> float:
        return a * scale

    @app.task(name="args.anything")
    def anything(**options: Any) -> int:
        return len(options)

    kw.check_arguments((1,), {"scale": 2.0})
    kw.check_arguments((), {"a": 1})
    anything.check_arguments((), {"whatever": 1, "else": 2})
    with pytest.raises(PoisonMessage, match=r"missing a required argument: 'a'"):
        kw.check_arguments((), {"scale": 2.0})


def test_a_bound_tasks_context_is_not_a_callers_keyword(app: App):
    @app.task(name="args.bound", bind=True)
    def bound(ctx: TaskContext, a: int) -> int:
        return a

    bound.check_arguments((1,), {})
    with pytest.raises(PoisonMessage, match=r"unexpected keyword argument 'ctx'"):
        bound.check_arguments((), {"ctx": None, "a": 1})


def test_a_positional_only_parameter_is_not_a_keyword(app: App):
    @app.task(name="args.positional")
    def positional(a: int, /) -> int:
        return a

    with pytest.raises(PoisonMessage, match=r"unexpected keyword argument 'a'"):
        positional.check_arguments((), {"a": 1})


def _shapes() -> list[Any]:
    def none() -> None: ...
    def two(a: int, b: int) -> None: ...
    def defaults(a: int, b: int = 1, c: int = 2) -> None: ...
    def star(a: int, *rest: int) -> None: ...
    def only(a: int, /, b: int = 0) -> None: ...
    def keyword_only(a: int, *, k: int) -> None: ...
    def keyword_default(a: int, *, k: int = 0) -> None: ...
    def any_keyword(a: int, **options: int) -> None: ...
    def context_first(ctx: TaskContext, a: int) -> None: ...
    def context_star(*everything: Any) -> None: ...

    return [none, two, defaults, star, only, keyword_only, keyword_default, any_keyword, context_first, context_star]


@pytest.mark.parametrize("bind", [False, True])
@pytest.mark.parametrize("handler", _shapes(), ids=lambda f: f.__name__)
def test_positional_calls_are_accepted_exactly_when_the_signature_binds(app: App, handler: Any, bind: bool):
    """check_arguments skips ``Signature.bind`` for calls without keywords; it must agree with bind on
    every count of positional arguments, for every shape of handler."""
    import inspect

    task = app.task(name=f"args.shape.{handler.__name__}.{bind}", bind=bind)(handler)
    signature = inspect.signature(handler)
    for count in range(6):
        args = tuple(range(count))
        try:
            signature.bind(*((None, *args) if bind else args))
            binds = True
        except TypeError:
            binds = False
        if binds:
            task.check_arguments(args, {})
        else:
            with pytest.raises(PoisonMessage, match="arguments do not fit"):
                task.check_arguments(args, {})
