"""``redis+sentinel://`` backend URLs: what they name, and a clear error for each way one can be wrong.

No server is contacted: building a Sentinel client connects lazily, at the first command.
"""

from __future__ import annotations

import pytest

from cogman import Config
from cogman.backends import create_backend
from cogman.backends.redis.sentinel import SentinelTarget, parse
from cogman.errors import ConfigError


def test_the_sentinels_the_service_and_the_database():
    target = parse("redis+sentinel://127.0.0.1:26381,127.0.0.1:26382,localhost/mymaster/5")
    assert target == SentinelTarget(
        sentinels=[("127.0.0.1", 26381), ("127.0.0.1", 26382), ("localhost", 26379)], service="mymaster", db=5
    )


def test_credentials_go_to_the_data_nodes_and_sentinel_password_to_the_sentinels():
    target = parse("REDIS+SENTINEL://app:s%40cret@10.0.0.1:26379/cache?sentinel_password=watch")
    assert (target.username, target.password, target.sentinel_password) == ("app", "s@cret", "watch")
    assert target.db == 0 and target.service == "cache"
    assert parse("redis+sentinel://:pw@h:1/s").username is None


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis+sentinel:///mymaster/0", "names no sentinel"),
        ("redis+sentinel://127.0.0.1:26381", "names no service"),
        ("redis+sentinel://127.0.0.1:26381/", "names no service"),
        ("redis+sentinel://127.0.0.1:26381/mymaster/zero", "only a database number"),
        ("redis+sentinel://127.0.0.1:26381/mymaster/0/extra", "only a database number"),
        ("redis+sentinel://127.0.0.1:port/mymaster", "'127.0.0.1:port' is not a sentinel's host:port"),
        ("redis+sentinel://127.0.0.1:26381,,127.0.0.1:26382/mymaster", "'' is not a sentinel's host:port"),
        ("redis+sentinel://127.0.0.1:70000/mymaster", "is not a sentinel's host:port"),
        ("redis+sentinel://h:1/mymaster?socket_timeout=1", "unsupported option.*socket_timeout"),
    ],
)
def test_a_bad_url_is_refused_naming_what_is_wrong(url, named):
    with pytest.raises(ConfigError, match=named):
        parse(url)
    with pytest.raises(ConfigError, match=named):  # the same error from the backend's factory
        create_backend(Config(broker_url="memory://", backend_url=url))


def test_the_password_is_never_shown_in_an_error():
    with pytest.raises(ConfigError) as caught:
        parse("redis+sentinel://app:hunter2@h:26379")
    assert "hunter2" not in str(caught.value) and "app:***@h:26379" in str(caught.value)


def test_a_sentinel_url_makes_a_redis_backend_that_follows_the_service():
    backend = create_backend(
        Config(broker_url="memory://", backend_url="redis+sentinel://127.0.0.1:1,127.0.0.1:2/svc/3")
    )
    try:
        assert type(backend).__name__ == "RedisBackend"
        assert backend.buffer.name == "Redis Sentinel svc/3 via 127.0.0.1:1,127.0.0.1:2"
        pool = backend.client.connection_pool
        assert (type(pool).__name__, pool.service_name) == ("SentinelConnectionPool", "svc")
    finally:
        backend.close()


@pytest.mark.parametrize(("option", "value"), [("redis_wait_replicas", -1), ("redis_wait_timeout", 0)])
def test_wait_settings_are_checked(option, value):
    with pytest.raises(ConfigError, match=option):
        Config(**{option: value})
