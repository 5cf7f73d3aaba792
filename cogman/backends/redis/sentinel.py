"""Backend URLs that name a Redis behind Sentinel, and the clients that follow its primary.

``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]``
is the form of the Redis-Sentinel-Url package, also read by Prefect and RedisVL: the sentinels (port 26379
by default), the name they monitor the primary under, the database. The credentials in front are the
data nodes' (as in a ``redis://`` URL); ``sentinel_password`` is the sentinels' own, if they ask for one.

redis-py has no URL for Sentinel, so the backend cannot use ``Redis.from_url``: :func:`client_factory`
hands it a function that builds ``Sentinel(...).master_for(service)`` clients instead. Their connections
ask the sentinels for the primary each time they (re)connect, and drop themselves on a READONLY reply (a
demoted primary), so after a failover every write goes to the promoted replica; the per-thread script
connections of wire.py are made from the same pool class and follow it too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import redis
from redis.sentinel import Sentinel

from cogman.backends.redis.urls import host_port, without_password
from cogman.errors import ConfigError

SCHEMES = ("redis+sentinel",)
DEFAULT_PORT = 26379
#: Builds one client (``socket_timeout=...``, ``retry=...``: redis.Redis keywords) of the backend's URL.
ClientFactory = Callable[..., redis.Redis]


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES if "://" in url else False


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def describe(self) -> str:
        where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"Redis Sentinel {self.service}/{self.db} via {where}"


def parse(url: str) -> SentinelTarget:
    """The parts of a ``redis+sentinel://`` URL; ConfigError naming what is wrong (passwords never shown)."""
    shown = without_password(url)
    form = "redis+sentinel://host:26379,host:26380/service[/db]"
    if not is_sentinel_url(url):
        raise ConfigError(f"not a Sentinel URL: {shown!r}; expected {form}")
    rest = url.split("://", 1)[1]
    netloc, _, path_and_query = rest.partition("/")
    path, _, query = path_and_query.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    if not hosts:
        raise ConfigError(f"{shown!r} names no sentinel; expected {form}")
    sentinels = [host_port(part, shown, DEFAULT_PORT, "a sentinel") for part in hosts.split(",")]
    parts = [unquote(piece) for piece in path.split("/")] if path else []
    if not parts or not parts[0]:
        raise ConfigError(f"{shown!r} names no service (the name the sentinels monitor the primary under); "
                          f"expected {form}")  # fmt: skip
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ConfigError(f"{shown!r}: after the service comes only a database number, got {path!r}; expected {form}")
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"sentinel_password"})
    if unknown:
        raise ConfigError(f"{shown!r}: unsupported option(s) {', '.join(unknown)}; only sentinel_password is read")
    username, _, password = userinfo.partition(":")
    return SentinelTarget(
        sentinels=sentinels,
        service=parts[0],
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=options["sentinel_password"][-1] if "sentinel_password" in options else None,
    )


def client_factory(url: str) -> tuple[ClientFactory, str]:
    """A function making clients of ``url`` (each with its own pool), and where they go, for messages."""
    if not is_sentinel_url(url):
        probe = redis.Redis.from_url(url)
        kwargs = probe.connection_pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"
        probe.close()
        return (lambda **options: redis.Redis.from_url(url, **options)), f"Redis {where}"
    target = parse(url)
    sentinel = Sentinel(
        target.sentinels,
        sentinel_kwargs={"socket_timeout": 2.0, "socket_connect_timeout": 2.0, "password": target.sentinel_password},
    )

    def make(**options: Any) -> redis.Redis:
        client: redis.Redis = sentinel.master_for(
            target.service, db=target.db, username=target.username, password=target.password, **options
        )
        return client

    return make, target.describe()
