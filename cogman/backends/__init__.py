"""Backends: the protocol (base.py), the in-memory backend, Redis (redis/), MongoDB (mongo/), and several
at once (multi.py), chosen by URL (``create_backend``).

May import only the shared vocabulary (``errors``, ``status``, ``record``, ``config``; ``signature`` late).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cogman.backends.base import Backend, StatusBucket, TaskPage, TaskQuery
from cogman.errors import ConfigError

if TYPE_CHECKING:
    from cogman.config.settings import Config

__all__ = ["Backend", "StatusBucket", "TaskPage", "TaskQuery", "create_backend"]


def create_backend(config: Config) -> Backend:
    """The backend(s) named by ``config.backend_url``; a list gives a MultiBackend (reads from the first)."""
    urls = config.backend_urls
    if len(urls) == 1:
        return _one(urls[0], config)
    from cogman.backends.multi import MultiBackend

    return MultiBackend([_one(url, config) for url in urls])


def _one(url: str, config: Config) -> Backend:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from cogman.backends.memory import MemoryBackend

        return MemoryBackend(config.redis_ttl)
    if scheme in ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster"):
        from cogman.backends.redis.backend import RedisBackend

        return RedisBackend(url, config)
    if scheme in ("mongodb", "mongodb+srv", "mongomock"):
        from cogman.backends.mongo.backend import MongoBackend

        return MongoBackend(url, config)
    raise ConfigError(
        f"unsupported backend URL {url!r}; use memory://, redis://host:6379/0, "
        "redis+sentinel://host:26379,host:26380/service/0, redis+cluster://host:7001,host:7002 or mongodb://host:27017"
    )
