"""``redis+cluster://`` backend URLs, and the sharded key layout a Redis Cluster needs (shards.py).

No server is contacted: the URL is only parsed, the layout only computed.
"""

from __future__ import annotations

import zlib

import pytest
from redis.crc import key_slot

from cogman import Config
from cogman.backends.redis.cluster import ClusterTarget, is_cluster_url, parse
from cogman.backends.redis.keys import KeyLayout
from cogman.backends.redis.shards import Shards, tags
from cogman.errors import ConfigError


def test_the_seed_nodes_credentials_and_tls():
    assert parse("redis+cluster://127.0.0.1:7001,127.0.0.1:7002") == ClusterTarget(
        [("127.0.0.1", 7001), ("127.0.0.1", 7002)]
    )
    target = parse("REDIS+CLUSTER://app:s%40cret@r1:7001,r2/0?ssl=true")
    assert target == ClusterTarget([("r1", 7001), ("r2", 6379)], "app", "s@cret", ssl=True)
    assert parse("redis+cluster://:pw@h:1/").username is None and parse("redis+cluster://:pw@h:1/").password == "pw"
    assert is_cluster_url("redis+cluster://h:1") and not is_cluster_url("redis://h:1/0")


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis+cluster://", "names no node"),
        ("redis+cluster:///0", "names no node"),
        ("redis+cluster://127.0.0.1:7001/3", "only database 0"),
        ("redis+cluster://127.0.0.1:port", "'127.0.0.1:port' is not a node's host:port"),
        ("redis+cluster://127.0.0.1:7001,,127.0.0.1:7002", "'' is not a node's host:port"),
        ("redis+cluster://127.0.0.1:70000", "is not a node's host:port"),
        ("redis+cluster://127.0.0.1:7001?db=0", "unsupported option(s) db"),
        ("redis+cluster://127.0.0.1:7001/?ssl=maybe", "ssl must be true or false"),
        ("redis://127.0.0.1:7001", "not a Redis Cluster URL"),
    ],
)
def test_each_mistake_is_named(url: str, named: str):
    with pytest.raises(ConfigError) as caught:
        parse(url)
    assert named in str(caught.value)


def test_the_password_is_never_shown():
    with pytest.raises(ConfigError) as caught:
        parse("redis+cluster://app:hunter2@127.0.0.1:7001/9")
    assert "hunter2" not in str(caught.value) and "app:***@" in str(caught.value)


@pytest.mark.parametrize("count", [1, 3, 16, 100, 1024])
def test_each_shard_tag_falls_in_its_own_equal_range_of_slots(count: int):
    found = tags(count)
    assert len(found) == len(set(found)) == count
    for shard, tag in enumerate(found):
        slot = key_slot(f"cogman:{{{tag}}}:task:x".encode())
        assert slot * count // 16384 == shard  # in [shard * 16384 / count, (shard + 1) * 16384 / count)
    if count == 16:
        assert [key_slot(f"{{{t}}}".encode()) // 1024 for t in found] == list(range(16))


def test_the_tags_are_fixed_so_every_process_finds_the_same_keys():
    assert tags(4) == tags(4) and tags(16)[:4] == tags(16)[:4]
    assert tags(16) == [str(int(t)) for t in tags(16)]  # short decimal tags


def test_one_shard_off_a_cluster_is_exactly_the_unsharded_layout():
    shards = Shards("cogman", 1000, 1, cluster=False)
    assert not shards.tagged and shards.layouts == [KeyLayout("cogman", 1000)]
    assert shards.of("abc").task("abc") == "cogman:task:abc" and shards.of("abc").route == ()
    assert shards.group(["a", "b"]) == [(shards.single, ["a", "b"])]


def test_on_a_cluster_every_key_of_a_task_is_in_its_shards_slot():
    shards = Shards("app", 1000, 16, cluster=True)
    for task_id in ("a", "b", "0f9d2c1e-0000-4000-8000-000000000000"):
        layout = shards.of(task_id)
        assert layout is shards.layouts[zlib.crc32(task_id.encode()) % 16]
        keys = [layout.task(task_id), layout.done(task_id), layout.index("name", "x{y}"), *layout.route]
        assert len({key_slot(key.encode()) for key in keys}) == 1
    assert Shards("app", 1000, 1, cluster=True).single.prefix.startswith("app:{")  # a cluster always tags


def test_ids_are_grouped_by_shard_keeping_their_order():
    shards = Shards("app", 1000, 4, cluster=False)
    ids = [f"id-{i}" for i in range(40)]
    groups = shards.group(ids)
    assert sorted(i for _, members in groups for i in members) == sorted(ids)
    for layout, members in groups:
        assert all(shards.of(i) is layout for i in members)
        assert members == [i for i in ids if shards.of(i) is layout]


def test_a_prefix_with_a_hash_tag_and_a_shard_count_out_of_range_are_refused():
    with pytest.raises(ConfigError, match="must not hold a hash tag"):
        Shards("app:{x}", 1000, 4, cluster=True)
    with pytest.raises(ConfigError, match="redis_shards must be between 1 and 16384"):
        Config(broker_url="memory://", backend_url="memory://", redis_shards=0)
    with pytest.raises(ConfigError, match="redis_shards must be between 1 and 16384"):
        tags(20000)


def test_a_cluster_none_of_whose_seeds_answers_is_named_when_the_backend_is_made():
    """RedisCluster reads the slot map at once (a ``redis://`` client connects lazily)."""
    from cogman.backends.redis.backend import RedisBackend
    from cogman.errors import BackendUnavailable
    from tests.ports import free_ports

    url = f"redis+cluster://127.0.0.1:{free_ports()}"  # nothing listens there
    with pytest.raises(BackendUnavailable, match=r"Redis Cluster via 127\.0\.0\.1:\d+: cannot read the slot map"):
        RedisBackend(url, Config(broker_url="memory://", backend_url="memory://"))
