"""Paths found in review where a worker could hang, loop or lose a message: each test fails without its fix."""

from __future__ import annotations

import asyncio
import time

import pytest

from cogman import App, Middleware, Status
from cogman.brokers.memory import MemoryBroker


def test_the_event_loop_outlives_a_background_task_raising_system_exit(app: App):
    """A task an async handler left behind raises SystemExit out of the loop; the loop thread used to die
    with it, and every later async task waited forever for a loop that no longer ran."""

    async def bail() -> None:
        raise SystemExit(3)

    @app.task(name="edges.leaves_a_task_behind")
    async def leaves_a_task_behind() -> int:
        asyncio.get_running_loop().create_task(bail())
        await asyncio.sleep(0)
        return 1

    @app.task(name="edges.later")
    async def later(n: int) -> int:
        await asyncio.sleep(0)
        return n

    worker = app.start_background(concurrency=2)
    try:
        assert leaves_a_task_behind.delay().get(timeout=10) == 1
        assert [later.delay(i).get(timeout=10) for i in range(3)] == [0, 1, 2]
    finally:
        worker.stop()


def test_a_middleware_raising_system_exit_gives_the_message_back_counted(app: App):
    """A hook that raises SystemExit escaped the executor: the delivery was neither acked nor given back
    and held its slot for good. Now it goes back counted, and is dead-lettered past max_redeliveries."""
    calls: list[str] = []

    class Bails(Middleware):
        def before_execute(self, message) -> None:  # type: ignore[no-untyped-def]
            calls.append(message.task_id)
            raise SystemExit("a hook gave up")

    app.middleware.middleware.append(Bails())  # type: ignore[attr-defined]

    @app.task(name="edges.fine")
    def fine() -> int:
        return 1

    broker = app.broker
    assert isinstance(broker, MemoryBroker)
    result = fine.delay()
    worker = app.start_background(concurrency=1)
    try:
        deadline = time.monotonic() + 30
        while not broker.dead_letters():  # the broker has no event for it; its state is polled, bounded
            assert time.monotonic() < deadline, "never dead-lettered"
            time.sleep(0.01)
        (letter,) = broker.dead_letters()
        assert "SystemExit" in str(letter.headers)
        assert len(calls) == broker.max_redeliveries + 1 and result.status is Status.IN_PROGRESS
        assert all(thread.is_alive() for thread in worker._threads)
    finally:
        worker.stop()


@pytest.mark.parametrize("task_id", ["x" * 256, "é" * 128, ""])
def test_a_task_id_that_cannot_be_an_amqp_message_id_is_refused_at_send(app: App, task_id: str):
    """py-amqp cannot encode a message_id over 255 bytes: such a send wedged the publisher in a
    reconnect loop. It is refused before anything is recorded."""

    @app.task(name="edges.named")
    def named() -> int:
        return 1

    with pytest.raises(ValueError, match="task_id must be a string of 1 to 255 UTF-8 bytes"):
        named.apply_async(task_id=task_id)
    assert app.backend.get(task_id) is None
    assert named.apply_async(task_id="y" * 255).id == "y" * 255
