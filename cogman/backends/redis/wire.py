"""How the Redis backend talks to Redis: which errors are an outage, script calls on fast paths, and the
:class:`Link` its helper modules are given instead of the backend.

Every state change is one EVALSHA; on a busy worker redis-py's command path (pool checkout, retry
wrapper, response callbacks) costs more CPU than the round trip itself, so :class:`ScriptCaller` keeps
one raw connection per thread for its calls. A script the server lost (a restart, a failover) is
loaded again and its call rerun.

With ``redis_wait_replicas`` a write counts only once that many replicas have it: Redis replicates
asynchronously, and a primary that dies before passing a write on takes it along. :class:`Replication`
sends ``SET <mark>`` and ``WAIT`` in the same packet as the script: the mark is a write that always
propagates, so WAIT covers the script's write even when the script changed nothing this time (a rerun
after a lost reply, a redelivery finding its task done, whose earlier write may still be unreplicated).
Fewer replicas by the timeout raises :class:`NotReplicated`, which the write buffer treats like an
outage: retried, then parked and replayed, and no message is acked behind it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from hiredis import pack_command  # a dependency: redis[hiredis]
from redis.sentinel import SentinelManagedConnection

if TYPE_CHECKING:
    from cogman.backends.outage import WriteBuffer
    from cogman.backends.redis.keys import KeyLayout


class NotReplicated(redis.RedisError):
    """WAIT counted fewer replicas than ``redis_wait_replicas`` holding a write within its timeout."""


#: Error replies a failover or a busy server gives for a while; the write is retried, never failed for good.
TRANSIENT_REPLIES = ("READONLY", "OOM", "TRYAGAIN", "BUSY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "NOREPLICAS")
TRANSIENT_CLASSES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    NotReplicated,
)
#: A wrong password is a ConnectionError for redis-py, but waiting will not fix it.
NOT_TRANSIENT: tuple[type[BaseException], ...] = (redis.AuthenticationError, redis.exceptions.AuthorizationError)


def is_transient(exc: BaseException) -> bool:
    """True for an outage or a failover (retry later), False for a mistake (fail now)."""
    if isinstance(exc, NOT_TRANSIENT):
        return False
    if isinstance(exc, TRANSIENT_CLASSES):
        return True
    return isinstance(exc, redis.ResponseError) and str(exc).split(" ", 1)[0] in TRANSIENT_REPLIES


@dataclass(frozen=True, slots=True)
class Link:
    """What a helper module (create, queries, workers, workflows) needs of Redis, so that it depends on
    neither the backend class nor a second pool: the backend's client, its write buffer (an outage is
    retried, parked or raised the same way for every call), ``run`` (a script call on this thread's own
    connection, as a thunk the buffer can retry or replay) and the key layout."""

    client: redis.Redis
    buffer: WriteBuffer
    run: Callable[[Any, list[Any]], Callable[[], Any]]
    keys: KeyLayout


@dataclass(frozen=True, slots=True)
class Replication:
    """How many replicas must hold a write (Redis WAIT), for how long to wait, and the mark key."""

    replicas: int
    timeout_ms: int
    mark: str

    def commands(self) -> list[bytes]:
        mark: tuple[Any, ...] = ("SET", self.mark, "1", "PX", 60_000)
        wait: tuple[Any, ...] = ("WAIT", self.replicas, self.timeout_ms)
        return [pack_command(mark), pack_command(wait)]

    def check(self, acked: int) -> None:
        if acked < self.replicas:
            raise NotReplicated(
                f"WAIT: {acked} of {self.replicas} replica(s) acknowledged the write within {self.timeout_ms} ms"
            )


class ScriptCaller:
    """EVALSHA on this thread's own connection (two: one for :meth:`send`); closed with the backend.
    With ``replication``, every call also waits for the replicas (module docstring)."""

    def __init__(self, client: redis.Redis, replication: Replication | None = None) -> None:
        self.client = client
        self.replication = replication
        self._local = threading.local()
        #: Each thread's connection with its thread: those of threads that ended are closed when another
        #: thread opens one (API request threads, re-enqueue passes come and go).
        self._connections: list[tuple[threading.Thread, Any]] = []
        self._lock = threading.Lock()

    def evalsha(self, script: Any, args: list[Any], replicate: bool = True) -> Any:
        """The script's reply; ``replicate=False`` for the read-only scripts (queries), which need no WAIT."""
        connection = self._connection("connection")
        try:
            _connected(connection)
            if self.replication is not None and replicate:
                return self._replicated(connection, self.replication, script, args)
            try:
                # hiredis packs in C; redis-py's send_command first re-checks every argument in Python
                connection.send_packed_command([pack_command(("EVALSHA", script.sha, 0, *args))])
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                connection.send_command("SCRIPT", "LOAD", script.script)
                connection.read_response()
                connection.send_command("EVALSHA", script.sha, 0, *args)
                return connection.read_response()
        except redis.exceptions.ReadOnlyError:
            connection.disconnect()  # a demoted primary: the next call asks the sentinels again
            raise
        except redis.ResponseError:
            raise  # the connection is fine: the server answered (every reply of the packet was read)
        except BaseException:
            connection.disconnect()  # a reply may be half read: never reuse this socket as it is
            raise

    def _replicated(self, connection: Any, replication: Replication, script: Any, args: list[Any]) -> Any:
        """The script, the mark and WAIT in one packet; every reply read (errors too) to stay in step."""
        connection.send_packed_command([pack_command(("EVALSHA", script.sha, 0, *args)), *replication.commands()])
        replies: list[Any] = []
        for _ in range(3):
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        if isinstance(replies[0], redis.exceptions.NoScriptError):  # nothing ran: load it, call again
            connection.send_command("SCRIPT", "LOAD", script.script)
            connection.read_response()
            return self._replicated(connection, replication, script, args)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        replication.check(int(replies[2]))
        return replies[0]

    def send(self, script: Any, args: list[Any]) -> Callable[[], Any]:
        """Write one EVALSHA without waiting; the returned function reads its reply (call it once).

        The caller does other I/O in between (the client publishes while Redis runs the create), so the
        call goes on this thread's second connection, which nothing else uses meanwhile."""
        connection = self._connection("pending")
        try:
            _connected(connection)
            connection.send_packed_command([pack_command(("EVALSHA", script.sha, 0, *args))])
        except BaseException:
            connection.disconnect()
            raise

        def reply() -> Any:
            try:
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                return self.evalsha(script, args)  # the server lost it: load it and run the call again
            except redis.ResponseError:
                raise
            except BaseException:
                connection.disconnect()
                raise

        return reply

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for _, connection in connections:
            connection.disconnect()

    def abandon_replies(self) -> None:
        """Close this thread's :meth:`send` connection: replies still due on it are never read, so the
        next call on it cannot take one of them for its own."""
        connection = getattr(self._local, "pending", None)
        if connection is not None:
            connection.disconnect()

    def _connection(self, slot: str) -> Any:
        connection = getattr(self._local, slot, None)
        if connection is None:
            pool = self.client.connection_pool
            connection = pool.connection_class(**pool.connection_kwargs)
            setattr(self._local, slot, connection)
            with self._lock:
                ended = [c for thread, c in self._connections if not thread.is_alive()]
                self._connections = [(t, c) for t, c in self._connections if t.is_alive()]
                self._connections.append((threading.current_thread(), connection))
            for stale in ended:
                stale.disconnect()
        return connection


def _connected(connection: Any) -> None:
    """Connect through ``connect()`` when the socket is gone, as the pool does: a Sentinel connection asks
    the sentinels for the primary there. ``send_packed_command`` would connect on its own, straight to the
    connection's last address, or to localhost:6379 for a fresh Sentinel connection: the wrong server. A
    plain connection keeps connecting there (no health-check PING: one round trip per call)."""
    if connection._sock is None and isinstance(connection, SentinelManagedConnection):
        connection.connect()  # type: ignore[no-untyped-call]
