"""The asyncio twin of ``RedisBackend.wait``'s wake-up, for ``AsyncResult.get_async`` (cogman/aio/).

One ``redis.asyncio`` client per event loop: BLPOP on ``<prefix>:done:<id>`` (the script that makes a
record final pushes a token there), then the token goes back for the other waiters, as in the sync wait.
The connections are bounded (``max_connections``; a waiter beyond them queues for one), each BLPOP lasts
at most ``slice`` seconds, and the caller re-reads the record after each. Cancelling the waiting
coroutine makes redis-py drop the connection the BLPOP was on, so neither a thread nor a server-side
waiter is left behind; a token it had just popped is then not put back, and any other waiter on the same
task re-reads after its slice (the sync wait's safety net for lost tokens).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis
import redis.asyncio

from cogman.backends.redis.keys import DONE_TTL_MS

#: Connections one event loop's waker opens at most.
MAX_CONNECTIONS = 32
#: What the waker's connections are named in ``CLIENT LIST``.
CLIENT_NAME = "cogman-aio-wait"


class AsyncWakeUp:
    def __init__(self, backend: object, url: str, done_key: Callable[[str], str], slice: float) -> None:
        #: The backend this waker serves: a reconfigured app gets a new one (cogman/aio/waiting.py).
        self.backend = backend
        #: A task's wake-up key, in its shard (backends/redis/shards.py).
        self.done_key = done_key
        self.slice = slice
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=None,
            socket_connect_timeout=2.0,
            socket_timeout=slice + 5.0,
            client_name=CLIENT_NAME,
        )
        self.client: redis.asyncio.Redis = redis.asyncio.Redis(connection_pool=pool)

    async def wait(self, task_id: str, timeout: float) -> None:
        done = self.done_key(task_id)
        try:
            token = await self.client.blpop([done], timeout=max(0.01, min(timeout, self.slice)))
            if token is not None:
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.rpush(done, token[1])
                    pipe.pexpire(done, DONE_TTL_MS)
                    await pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            await asyncio.sleep(min(0.5, timeout))  # Redis away: the caller's re-read raises or waits on

    async def aclose(self) -> None:
        await self.client.aclose()
