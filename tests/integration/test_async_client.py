"""The asyncio client (issue 24, docs/async.md): ``send_async``, ``delay_async``, ``send_task_async``,
``get_async``, ``status_async`` and ``aclose``, on memory:// and on RabbitMQ with Redis.

The event loop is shown to run on while a coroutine sends and waits: a second coroutine on the same loop
bumps a counter at every turn of the loop, and the counter is read before each send and each result.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from cogman import App, TaskFailed
from cogman.backends.base import TaskQuery
from cogman.backends.memory import MemoryBackend
from cogman.backends.redis.aio import CLIENT_NAME
from cogman.errors import TaskNotFound
from cogman.result import NoWorker
from cogman.status import Status
from tests.integration.redis_helpers import drop_prefix

TASKS = 1000


@pytest.fixture(params=["memory", "rabbitmq-redis"])
def stack(request: pytest.FixtureRequest) -> Iterator[Callable[..., App]]:
    """``stack(**options)``: an App on memory://, or on the test vhost with the test Redis database under a
    private key prefix; closed (and the prefix dropped) afterwards."""
    apps: list[App] = []
    prefix = f"aio-{uuid.uuid4().hex[:8]}"
    redis_url = ""
    if request.param == "memory":
        urls = {"broker": "memory://", "backend": "memory://"}
    else:
        redis_url = request.getfixturevalue("redis_url")
        urls = {"broker": request.getfixturevalue("rabbit"), "backend": redis_url, "redis_prefix": prefix}

    def make(**options: Any) -> App:
        app = App("aio", **urls, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()
    if redis_url:
        drop_prefix(redis_url, prefix)


def register(app: App) -> tuple[Any, Any, Any, threading.Event]:
    """add(a, b); boom() fails with retry=1; held() runs until the returned event is set."""
    release = threading.Event()

    @app.task(name="aio.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="aio.boom", retry=1)
    def boom(message: str) -> None:
        raise ValueError(message)

    @app.task(name="aio.held")
    def held() -> str:
        assert release.wait(60), "the test never released the task"
        return "released"

    return add, boom, held, release


class Ticker:
    """A coroutine that counts the turns of the event loop it runs on, until stopped."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def grew_every_time(readings: list[int]) -> list[int]:
    """The indexes at which the counter did not move since the previous reading (empty: it always did)."""
    return [i for i in range(1, len(readings)) if readings[i] <= readings[i - 1]]


def test_the_loop_runs_between_sends_and_between_results(stack: Callable[..., App]) -> None:
    app = stack()
    add, *_ = register(app)
    worker = app.start_background(concurrency=4)

    async def main() -> None:
        with Ticker() as ticker:
            sent_at, handles = [], []
            for i in range(TASKS):
                sent_at.append(ticker.count)
                handles.append(await add.delay_async(i, i))
            sent_at.append(ticker.count)
            read_at, values = [], []
            for handle in handles:
                read_at.append(ticker.count)
                values.append(await handle.get_async(timeout=120))
            read_at.append(ticker.count)
        assert grew_every_time(sent_at) == []
        assert grew_every_time(read_at) == []
        assert values == [2 * i for i in range(TASKS)]
        assert await handles[-1].status_async() is Status.SUCCESS
        await app.aclose()

    try:
        asyncio.run(main())
    finally:
        worker.stop()


def test_send_task_async_and_send_async_take_the_sync_options(stack: Callable[..., App]) -> None:
    app = stack()
    add, *_ = register(app)
    worker = app.start_background(concurrency=2)

    async def main() -> None:
        by_name = await app.send_task_async("aio.add", args=(2, 3), task_id="chosen-id", wait_confirmed=True)
        assert by_name.id == "chosen-id"
        assert await by_name.get_async(timeout=30) == 5
        sent = await add.send_async(args=(1,), kwargs={"b": 6}, priority="low", primary_key="pk-1")
        assert await sent.get_async(timeout=30) == 7
        assert (await asyncio.to_thread(sent.record)).primary_key == "pk-1"
        with pytest.raises(TypeError, match=r"arguments do not fit aio\.add"):  # as delay() raises
            await add.delay_async(1, 2, 3)
        with pytest.raises(TaskNotFound):
            await app.result("never-sent").get_async(timeout=1)
        with pytest.raises(TaskNotFound):
            await app.result("never-sent").status_async()
        await app.aclose()

    try:
        asyncio.run(main())
    finally:
        worker.stop()


def test_failures_and_timeouts_are_the_sync_ones(stack: Callable[..., App]) -> None:
    app = stack()
    _, boom, held, release = register(app)
    worker = app.start_background(concurrency=2)

    async def main() -> None:
        failing = await boom.delay_async("nope")
        with pytest.raises(TaskFailed) as from_async:
            await failing.get_async(timeout=30)
        with pytest.raises(TaskFailed) as from_sync:
            await asyncio.to_thread(failing.get, 30)
        assert (from_async.value.task_id, from_async.value.error, from_async.value.attempts) == (
            from_sync.value.task_id,
            from_sync.value.error,
            from_sync.value.attempts,
        )
        assert from_async.value.attempts == 2
        assert "ValueError: nope" in (from_async.value.traceback or "")
        assert await failing.status_async() is Status.FAILED

        waiting = await held.delay_async()
        with pytest.raises(TimeoutError, match=f"task {waiting.id} not finished after 0.2 s"):
            await waiting.get_async(timeout=0.2)
        release.set()
        assert await waiting.get_async(timeout=30) == "released"
        await app.aclose()

    try:
        asyncio.run(main())
    finally:
        release.set()
        worker.stop()


def test_no_worker_is_raised_as_by_get(app: App) -> None:
    add, *_ = register(app)

    async def main() -> None:
        handle = await add.delay_async(1, 2)
        with pytest.raises(NoWorker, match="no worker runs in this process"):
            await handle.get_async(timeout=30)
        await app.aclose()

    asyncio.run(main())


def blocked_waiters(redis_url: str) -> list[dict[str, Any]]:
    """The connections of ``get_async`` (by their client name) the Redis server holds on this test's
    database, in any state (a suite running beside this one uses another database)."""
    connection = redis.Redis.from_url(redis_url)
    db = str(connection.get_connection_kwargs().get("db", 0))
    try:
        return [c for c in connection.client_list() if c.get("name") == CLIENT_NAME and str(c.get("db")) == db]
    finally:
        connection.close()


def test_cancelling_get_async_leaves_nothing_behind(stack: Callable[..., App], request: pytest.FixtureRequest) -> None:
    app = stack()
    _, _, held, release = register(app)
    worker = app.start_background(concurrency=2)
    redis_url = app.config.backend_url if isinstance(app.config.backend_url, str) else ""
    on_redis = redis_url.startswith("redis://")

    async def waiting_on_the_backend(task_id: str) -> bool:
        if on_redis:
            return any(c.get("cmd") == "blpop" for c in await asyncio.to_thread(blocked_waiters, redis_url))
        backend = app.backend
        assert isinstance(backend, MemoryBackend)
        return task_id in backend._watchers

    async def main() -> None:
        handle = await held.delay_async()
        getting = asyncio.get_running_loop().create_task(handle.get_async())
        for _ in range(2000):  # until the wait is on the backend (no event tells it: look, then yield)
            if await waiting_on_the_backend(handle.id):
                break
            await asyncio.sleep(0.005)
        else:
            pytest.fail("get_async never waited on the backend")
        assert app.aio.busy == 0, "get_async waits without a thread"
        getting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getting
        # Nothing left: no call in the pool, no other task on the loop, no waiter in the backend.
        assert app.aio.busy == 0
        assert asyncio.all_tasks() == {asyncio.current_task()}
        if on_redis:
            waker = app.aio.wakers[asyncio.get_running_loop()]
            pool = waker.client.connection_pool
            assert pool._in_use_connections == set()  # type: ignore[attr-defined]
            for _ in range(2000):  # the server drops the BLPOP once it sees the connection closed
                if not any(c.get("cmd") == "blpop" for c in await asyncio.to_thread(blocked_waiters, redis_url)):
                    break
                await asyncio.sleep(0.005)
            else:
                pytest.fail("Redis still holds the cancelled BLPOP")
        else:
            backend = app.backend
            assert isinstance(backend, MemoryBackend)
            assert backend._watchers == {}
        # The handle still works afterwards.
        release.set()
        assert await handle.get_async(timeout=30) == "released"
        await app.aclose()
        assert app.aio.wakers.get(asyncio.get_running_loop()) is None

    try:
        asyncio.run(main())
    finally:
        release.set()
        worker.stop()


def test_aclose_waits_for_sends_and_stops_the_pool(stack: Callable[..., App]) -> None:
    app = stack()
    add, *_ = register(app)
    worker = app.start_background(concurrency=2)

    async def main() -> list[Any]:
        sends = [asyncio.ensure_future(add.delay_async(i, 1)) for i in range(50)]
        await asyncio.sleep(0)  # the sends are submitted to the pool
        threads = app.aio.threads
        assert threads and all(t.name.startswith("cogman-aio") for t in threads)
        await app.aclose()
        assert app.aio.busy == 0
        assert all(s.done() for s in sends)
        for thread in threads:  # the pool was shut down: its threads end
            await asyncio.to_thread(thread.join, 30)
            assert not thread.is_alive()
        return [s.result() for s in sends]

    try:
        handles = asyncio.run(main())
        assert [h.get(timeout=30) for h in handles] == [i + 1 for i in range(50)]  # reopened on use, as close
    finally:
        worker.stop()


def test_a_backend_without_an_async_wake_up_waits_in_short_slices() -> None:
    """MongoDB (here mongomock) has no wake-up to await: ``get_async`` runs ``Backend.wait`` in the pool,
    one ``SLICE`` at a time, so a cancelled wait frees its thread within a slice."""
    from cogman.aio.waiting import SLICE

    app = App("aio-mongo", broker="memory://", backend=f"mongomock://aio-{uuid.uuid4().hex[:8]}")
    add, boom, held, release = register(app)
    worker = app.start_background(concurrency=2)

    async def main() -> None:
        assert await (await add.delay_async(2, 2)).get_async(timeout=30) == 4
        with pytest.raises(TaskFailed, match="ValueError: mongo"):
            await (await boom.delay_async("mongo")).get_async(timeout=30)
        handle = await held.delay_async()
        getting = asyncio.get_running_loop().create_task(handle.get_async())
        for _ in range(2000):  # until a slice of Backend.wait runs in the pool
            if app.aio.busy:
                break
            await asyncio.sleep(0.001)
        getting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await getting
        started = time.monotonic()
        while app.aio.busy:  # the slice in flight ends by itself; nothing follows it
            assert time.monotonic() - started < SLICE + 30, "a pool thread is still waiting"
            await asyncio.sleep(0.01)
        release.set()
        assert await handle.get_async(timeout=30) == "released"
        await app.aclose()

    try:
        asyncio.run(main())
    finally:
        release.set()
        worker.stop()
        app.close()


def test_a_send_cancelled_before_its_turn_in_the_pool_is_not_sent(app: App) -> None:
    add, *_ = register(app)
    busy = threading.Event()

    async def main() -> None:
        blockers = [asyncio.ensure_future(app.aio.run(busy.wait)) for _ in range(app.aio.max_workers)]
        await asyncio.sleep(0)
        sending = asyncio.ensure_future(add.delay_async(1, 1))
        await asyncio.sleep(0)  # submitted, queued behind the blockers
        assert app.aio.busy == app.aio.max_workers + 1
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        busy.set()
        await asyncio.gather(*blockers)
        assert app.aio.busy == 0
        assert app.backend.query(TaskQuery()).total == 0  # the send never ran
        sent = await add.delay_async(2, 2)
        assert app.backend.query(TaskQuery()).total == 1
        assert sent.id
        await app.aclose()

    try:
        asyncio.run(main())
    finally:
        busy.set()
