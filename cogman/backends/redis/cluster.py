"""Backend URLs that name a Redis Cluster, its clients, and script calls routed to the slot's primary.

``redis+cluster://[[user]:password@]host:port[,host:port...][/0][?ssl=true]`` names a few seed nodes
(any nodes of the cluster; port 6379 by default): redis-py's ``RedisCluster`` asks them for the slot
map and follows it, and MOVED replies and failovers. Unlike a ``redis://`` client it connects at once:
with no seed reachable, the backend is not made (BackendUnavailable naming the seeds). The credentials
are the data nodes' (as in a ``redis://`` URL); a cluster has only database 0; ``ssl=true`` uses TLS.

Every Lua script of the log touches keys of one slot (shards.py) and is called with one KEY of that
slot. :class:`ClusterScriptCaller` keeps, per thread, one raw connection to each primary it calls (as
wire.py's ScriptCaller does on one Redis) and sends each call to the primary holding its slot, so the
SET mark and WAIT of ``redis_wait_replicas`` go to the same node, on the same connection, as the
script. An error that says the slot map is stale (MOVED, a lost connection, CLUSTERDOWN, a slot no
primary serves) asks for a refresh of the map, done by the next call, and the write buffer retries
the call (then parks and replays it: outage.py), by then on the promoted replica.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from cogman.backends.redis.urls import host_port, without_password
from cogman.backends.redis.wire import Replication, ScriptCaller
from cogman.errors import BackendUnavailable, ConfigError

SCHEMES = ("redis+cluster",)
DEFAULT_PORT = 6379
#: Least time between two refreshes of the slot map asked for by failed calls (a failover takes seconds).
REFRESH_INTERVAL = 0.25
_FORM = "redis+cluster://host:7001,host:7002[/0][?ssl=true]"


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES if "://" in url else False


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """What a ``redis+cluster://`` URL names."""

    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    ssl: bool = False

    def describe(self) -> str:
        return "Redis Cluster via " + ",".join(f"{host}:{port}" for host, port in self.nodes)


def parse(url: str) -> ClusterTarget:
    """The parts of a ``redis+cluster://`` URL; ConfigError naming what is wrong (passwords never shown)."""
    shown = without_password(url)
    if not is_cluster_url(url):
        raise ConfigError(f"not a Redis Cluster URL: {shown!r}; expected {_FORM}")
    netloc, _, path_and_query = url.split("://", 1)[1].partition("/")
    path, _, query = path_and_query.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    if not hosts:
        raise ConfigError(f"{shown!r} names no node; expected {_FORM}")
    nodes = [host_port(part, shown, DEFAULT_PORT, "a node") for part in hosts.split(",")]
    if path.strip("/") not in ("", "0"):
        raise ConfigError(f"{shown!r}: a Redis Cluster has only database 0, got {path!r}; expected {_FORM}")
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"ssl"})
    if unknown:
        raise ConfigError(f"{shown!r}: unsupported option(s) {', '.join(unknown)}; only ssl is read")
    ssl = options.get("ssl", ["false"])[-1].lower()
    if ssl not in ("true", "false", "1", "0"):
        raise ConfigError(f"{shown!r}: ssl must be true or false, got {ssl!r}")
    username, _, password = userinfo.partition(":")
    return ClusterTarget(nodes, unquote(username) or None, unquote(password) or None, ssl in ("true", "1"))


def client_factory(url: str) -> tuple[Callable[..., Any], str]:
    """A function making ``RedisCluster`` clients of ``url``, and where they go, for messages. The
    backend's ``retry`` option (none: its write buffer retries) is dropped: the cluster client's own
    retries are what follow MOVED replies and failovers."""
    target = parse(url)

    def make(**options: Any) -> RedisCluster:
        options.pop("retry", None)
        try:
            return RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],  # type: ignore[no-untyped-call]
                username=target.username,
                password=target.password,
                ssl=target.ssl,
                **options,
            )
        except redis.exceptions.RedisClusterException as exc:  # the client reads the slot map at once
            raise BackendUnavailable(f"{target.describe()}: cannot read the slot map ({exc})") from exc

    return make, target.describe()


class ClusterScriptCaller(ScriptCaller):
    """ScriptCaller whose calls go to the primary of their first KEY's slot (module docstring)."""

    def __init__(self, client: Any, replication: Replication | None = None) -> None:
        super().__init__(client, replication)
        self.cluster: RedisCluster = client
        self._stale = False
        self._refreshed = 0.0
        self._refreshing = threading.Lock()

    def _connection(self, kind: str, keys: tuple[str, ...] = ()) -> Any:
        if not keys:
            raise ValueError("a script call on a Redis Cluster needs a KEY of its slot")
        if self._stale:
            self._refresh()
        try:
            node = self.cluster.nodes_manager.get_node_from_slot(key_slot(keys[0].encode()))
            if node.redis_connection is None:
                self.cluster.nodes_manager.create_redis_connections([node])  # type: ignore[no-untyped-call]
        except redis.exceptions.RedisClusterException as exc:  # a slot no primary serves, until a failover
            self._stale = True
            raise redis.exceptions.ClusterDownError(f"CLUSTERDOWN {exc}") from exc
        return self._own(f"{kind}:{node.name}", node.redis_connection.connection_pool)

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, redis.exceptions.AskError)) or (
            isinstance(exc, redis.ResponseError)
            and str(exc).split(" ", 1)[0] in ("CLUSTERDOWN", "TRYAGAIN", "READONLY")
        ):
            self._stale = True

    def _refresh(self) -> None:
        """Ask the cluster for its slot map again (one thread at a time, at most every REFRESH_INTERVAL)."""
        if time.monotonic() - self._refreshed < REFRESH_INTERVAL or not self._refreshing.acquire(blocking=False):
            return
        try:
            self._refreshed = time.monotonic()
            self.cluster.nodes_manager.initialize()
            self._stale = False
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            raise redis.ConnectionError(f"refreshing the Redis Cluster slot map: {exc}") from exc
        finally:
            self._refreshing.release()
