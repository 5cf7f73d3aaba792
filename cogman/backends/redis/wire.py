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
    from cogman.backends.redis.shards import Shards


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
    redis.exceptions.ClusterError,
    redis.exceptions.AskError,  # and MOVED: a Redis Cluster slot that moved (the slot map is refreshed)
    redis.exceptions.SlotNotCoveredError,  # a Redis Cluster slot whose primary is gone, until a failover
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
    if not isinstance(exc, redis.ResponseError):
        return False
    return str(exc).split(" ", 1)[0] in TRANSIENT_REPLIES or "cluster is down" in str(exc)


@dataclass(frozen=True, slots=True)
class Link:
    """What a helper module (create, queries, workers, workflows) needs of Redis, so that it depends on
    neither the backend class nor a second pool: the backend's client, its write buffer (an outage is
    retried, parked or raised the same way for every call), ``run`` (a script call on this thread's own
    connection, as a thunk the buffer can retry or replay), the key layout of the unsharded log or of
    shard 0, and the shards (shards.py)."""

    client: redis.Redis
    buffer: WriteBuffer
    run: Callable[..., Callable[[], Any]]
    keys: KeyLayout
    shards: Shards

    def script(self, script: Any, args: list[Any], layout: KeyLayout) -> Callable[[], Any]:
        """``run`` on ``layout``'s shard: with its routing KEYS when it has any (a spy replacing the
        backend's ``_run`` keeps its two-argument form on one Redis)."""
        return self.run(script, args, layout.route) if layout.route else self.run(script, args)


@dataclass(frozen=True, slots=True)
class Replication:
    """How many replicas must hold a write (Redis WAIT), for how long to wait, and the mark key."""

    replicas: int
    timeout_ms: int
    mark: str

    def commands(self, mark_key: str | None = None) -> list[bytes]:
        """SET of the mark (``mark_key``: one in the script's slot on a Redis Cluster) and WAIT, packed."""
        mark: tuple[Any, ...] = ("SET", mark_key or self.mark, "1", "PX", 60_000)
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

    def evalsha(self, script: Any, args: list[Any], replicate: bool = True, keys: tuple[str, ...] = ()) -> Any:
        """The script's reply; ``replicate=False`` for the read-only scripts (queries), which need no WAIT.
        ``keys``: the KEYS of the call, which route it on a Redis Cluster (shards.py); none on one Redis."""
        connection = self._connection("connection", keys)
        try:
            _connected(connection)
            if self.replication is not None and replicate:
                return self._replicated(connection, self.replication, script, args, keys)
            try:
                # hiredis packs in C; redis-py's send_command first re-checks every argument in Python
                connection.send_packed_command([pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))])
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                connection.send_command("SCRIPT", "LOAD", script.script)
                connection.read_response()
                connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return connection.read_response()
        except redis.exceptions.ReadOnlyError as exc:
            connection.disconnect()  # a demoted primary: the next call asks the sentinels again
            self._failed(exc)
            raise
        except redis.ResponseError as exc:
            self._failed(exc)
            raise  # the connection is fine: the server answered (every reply of the packet was read)
        except BaseException as exc:
            connection.disconnect()  # a reply may be half read: never reuse this socket as it is
            self._failed(exc)
            raise

    def _failed(self, exc: BaseException) -> None:
        """Called with the error of a call before it is raised; a Redis Cluster refreshes its slot map."""

    def _replicated(
        self, connection: Any, replication: Replication, script: Any, args: list[Any], keys: tuple[str, ...]
    ) -> Any:
        """The script, the mark and WAIT in one packet; every reply read (errors too) to stay in step."""
        call = pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
        connection.send_packed_command([call, *replication.commands(keys[0] if keys else None)])
        replies: list[Any] = []
        for _ in range(3):
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        if isinstance(replies[0], redis.exceptions.NoScriptError):  # nothing ran: load it, call again
            connection.send_command("SCRIPT", "LOAD", script.script)
            connection.read_response()
            return self._replicated(connection, replication, script, args, keys)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        replication.check(int(replies[2]))
        return replies[0]

    def send(
        self, script: Any, args: list[Any], keys: tuple[str, ...] = (), kind: str = "pending", alone: bool = False
    ) -> Callable[[], Any]:
        """Write one EVALSHA without waiting; the returned function reads its reply (call it once).

        The caller does other I/O in between (the client publishes while Redis runs the create), so the
        call goes on this thread's connection of ``kind`` ("pending"; "starting" for a worker's start, read
        after its handler ran, during which the handler may send on "pending"), which nothing else
        uses meanwhile. Several sends may wait there, their replies read in order (a create in slices);
        ``alone``: at most this one, so a reply never read (its caller raised in between) is dropped
        with its socket before the next such send, and no call takes another's reply."""
        connection = self._connection(kind, keys)
        unread = getattr(self._local, "unread", None)
        if unread is None:
            unread = self._local.unread = set()
        if alone and connection in unread:
            connection.disconnect()
        try:
            _connected(connection)
            connection.send_packed_command([pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))])
        except BaseException as exc:
            connection.disconnect()
            self._failed(exc)
            raise
        if alone:
            unread.add(connection)

        def reply() -> Any:
            unread.discard(connection)
            try:
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                return self.evalsha(script, args, keys=keys)  # the server lost it: load it, run the call again
            except redis.ResponseError as exc:
                self._failed(exc)
                raise
            except BaseException as exc:
                connection.disconnect()
                self._failed(exc)
                raise

        return reply

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for _, connection in connections:
            connection.disconnect()

    def abandon_replies(self) -> None:
        """Close this thread's :meth:`send` connection(s): replies still due on them are never read, so
        the next call on one cannot take one of them for its own."""
        for name, connection in list(vars(self._local).items()):
            if name.startswith("pending"):
                connection.disconnect()

    def _connection(self, kind: str, keys: tuple[str, ...] = ()) -> Any:
        """This thread's connection of ``kind`` ("connection" or "pending"); ``keys`` matter on a cluster."""
        return self._own(kind, self.client.connection_pool)

    def _own(self, name: str, pool: Any) -> Any:
        connection = getattr(self._local, name, None)
        if connection is None:
            connection = pool.connection_class(**pool.connection_kwargs)
            setattr(self._local, name, connection)
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
