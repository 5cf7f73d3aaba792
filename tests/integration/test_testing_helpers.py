"""Issue 9: what a user needs to test their own tasks: eager mode, ``app.join``, the pytest plugin, and
``apply_async`` with Celery's names."""

from __future__ import annotations

import textwrap

import pytest

from cogman import App, Status, TaskFailed

pytest_plugins = ["pytester"]


def test_eager_runs_inline_and_records_the_full_history():
    app = App("eager", broker="amqp://nobody@127.0.0.1:1//", backend="memory://", eager=True)
    calls: list[int] = []

    @app.task(name="eager.flaky", retry=1)
    def flaky(n: int) -> int:
        calls.append(n)
        if len(calls) == 1:
            raise OSError("first try")
        return n * 2

    @app.task(name="eager.parent")
    def parent(n: int) -> int:
        return flaky.delay(n).get() + 1  # a task sending a task: runs inline too

    result = flaky.delay(4)
    assert calls == [4, 4]  # both attempts ran before delay() returned, on no broker at all
    assert result.get() == 8 and result.state == "SUCCESS"
    first = result.record()
    assert first.status is Status.FAILED and first.fail_error == "OSError: first try"
    assert first.traceback is not None and "OSError: first try" in first.traceback
    assert result.latest().attempt == 2
    calls.clear()
    calls.append(0)  # the next flaky call succeeds at once
    assert parent.delay(5).get() == 11
    app.close()


def test_eager_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COGMAN_EAGER", "1")
    app = App("eager-env", broker="memory://", backend="memory://")

    @app.task(name="eager.add")
    def add(a: int, b: int) -> int:
        return a + b

    assert add.delay(2, 3).get() == 5
    app.close()


def test_join_waits_for_everything_sent_and_fail_fast_raises_the_first_failure(app: App):
    @app.task(name="join.check", retry=1)
    def check(n: int) -> int:
        if n == 3:
            raise ValueError("three is bad")
        return n

    results = [check.delay(i) for i in range(6)]
    worker = app.start_background(concurrency=2)
    try:
        app.join(timeout=30)  # no fail_fast: waits for all, raises nothing
        assert [r.status for r in results].count(Status.SUCCESS) == 5
        again = [check.delay(i) for i in (1, 3, 5)]
        with pytest.raises(TaskFailed, match="three is bad") as caught:
            app.join(timeout=30, fail_fast=True)
        assert caught.value.attempts == 2 and caught.value.task_id == again[1].id
    finally:
        worker.stop()


def test_join_is_for_the_memory_broker():
    app = App("joins", broker="amqp://guest:guest@127.0.0.1:5672//", backend="memory://")
    with pytest.raises(Exception, match="join\\(\\) waits for tasks sent on the memory:// broker"):
        app.join()


def test_apply_async_with_celery_names_and_a_chosen_id(app: App):
    @app.task(name="celery.like")
    def like(a: int, b: int = 0) -> int:
        return a + b

    worker = app.start_background(concurrency=1)
    try:
        result = like.apply_async(args=(1,), kwargs={"b": 2}, task_id="my-id-1", priority="low", primary_key="k")
        assert result.id == "my-id-1" and result.get(timeout=10) == 3
        record = result.record()
        assert record.priority.value == "low" and record.primary_key == "k"
        assert result.successful() and not result.failed() and result.result == 3 and result.traceback is None
    finally:
        worker.stop()


def test_the_pytest_plugin_gives_an_app_and_a_worker(pytester: pytest.Pytester):
    pytester.makepyfile(
        shop=textwrap.dedent(
            """
            from cogman import App

            app = App("shop", broker="amqp://guest:guest@127.0.0.1:1//", backend="redis://127.0.0.1:1/0")

            @app.task(name="shop.total")
            def total(prices: list) -> float:
                return sum(prices)
            """
        )
    )
    pytester.makepyfile(
        test_shop=textwrap.dedent(
            """
            from shop import total

            def test_total(cogman_app, cogman_worker):
                assert cogman_app.config.broker_url == "memory://"  # switched for the test
                assert total.delay([1, 2.5]).get(timeout=10) == 3.5
                cogman_app.join(timeout=10)

            def test_the_named_app_keeps_its_tasks(cogman_app):
                assert cogman_app.tasks  # shop's app, named in the ini file
            """
        )
    )
    pytester.makeini("[pytest]\ncogman_app = shop:app\n")
    outcome = pytester.runpytest_subprocess("-q")  # the plugin loads through its pytest11 entry point
    outcome.assert_outcomes(passed=2)
