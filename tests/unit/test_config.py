from __future__ import annotations

from datetime import timedelta

import pytest

from cogman import App, Config
from cogman.errors import ConfigError
from cogman.record import utcnow


def test_defaults_follow_cogman():
    config = Config(broker_url="memory://", backend_url="memory://")
    assert config.connection_timeout == 600 and config.request_timeout == 5
    assert config.redis_ttl == 7 * 24 * 3600 and config.mongo_ttl == 30 * 24 * 3600
    assert config.high_priority_queue_count == 1 == config.low_priority_queue_count
    assert config.prefetch_for(4) == 8


def test_env_vars_choose_urls(monkeypatch):
    monkeypatch.setenv("COGMAN_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    monkeypatch.delenv("COGMAN_BACKEND_URL", raising=False)
    app = App("x")
    assert app.config.broker_url.startswith("amqp://")
    assert app.config.backend_url == "memory://"


def test_every_option_is_an_app_keyword():
    app = App("x", broker="memory://", backend=["memory://", "memory://"], prefetch=3, redis_ttl=60)
    assert app.config.prefetch == 3 and app.config.redis_ttl == 60
    assert app.config.backend_urls == ["memory://", "memory://"]


def test_unknown_option_is_named():
    with pytest.raises(ConfigError, match=r"unknown option.*prefech"):
        App("x", prefech=3)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("concurrency", 0),
        ("request_timeout", -1),
        ("prefetch", 0),
        ("queue_type", "stream"),
        ("high_priority_queue_count", 0),
        ("queue_prefix", "amq"),
        ("queue_prefix", "amq.shop"),
        ("queue_prefix", "shop#"),
        ("queue_prefix", "shop."),
        ("queue_prefix", "a b"),
        ("queue_prefix", "s" * 65),
    ],
)
def test_bad_values_are_named(option, value):
    with pytest.raises(ConfigError, match=option):
        Config(**{option: value})


def test_queue_prefix_is_off_by_default_and_names_every_queue():
    """Off: Cogman's own names. Set: every queue and exchange name behind it (the brokers' Topology)."""
    from cogman.brokers.rabbitmq.topology import Topology
    from cogman.priority import Priority

    plain = Topology.of(Config(broker_url="memory://", backend_url="memory://"))
    assert plain.names(Priority.HIGH) == ["high_priority_queue_0"]
    assert plain.dead_letter_queue().name == "cogman.dead_letter" and plain.level_name(3) == "cogman.delay.3"
    shop = Topology.of(Config(queue_prefix="acme.shop", high_priority_queue_count=2))
    assert shop.names(Priority.HIGH) == ["acme.shop.high_priority_queue_0", "acme.shop.high_priority_queue_1"]
    assert shop.names(Priority.LOW) == ["acme.shop.low_priority_queue_0"]
    assert shop.dead_letter_queue().name == "acme.shop.cogman.dead_letter"
    assert shop.level_name(3) == "acme.shop.cogman.delay.3"
    exchange, key = shop.route("acme.shop.high_priority_queue_0", utcnow() + timedelta(seconds=5))
    assert exchange.startswith("acme.shop.cogman.delay.") and key.endswith(".acme.shop.high_priority_queue_0")


def test_unknown_broker_scheme():
    with pytest.raises(ConfigError, match="unsupported broker URL 'kafka://x'"):
        _ = App("x", broker="kafka://x", backend="memory://").broker


def test_every_field_can_come_from_the_environment_typed(monkeypatch):
    monkeypatch.setenv("COGMAN_CONCURRENCY", "16")
    monkeypatch.setenv("COGMAN_REQUEST_TIMEOUT", "2.5")
    monkeypatch.setenv("COGMAN_PREFETCH", "none")
    monkeypatch.setenv("COGMAN_RE_ENQUEUE", "yes")
    monkeypatch.setenv("COGMAN_BACKEND_URL", "memory://, memory://")
    monkeypatch.setenv("COGMAN_QUEUE_TYPE", "quorum")
    app = App("env", concurrency=4)  # an explicit option wins over the environment
    config = app.config
    assert (config.concurrency, config.request_timeout, config.prefetch, config.re_enqueue) == (4, 2.5, None, True)
    assert config.backend_urls == ["memory://", "memory://"] and config.queue_type == "quorum"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("COGMAN_CONCURRENCY", "lots", "COGMAN_CONCURRENCY='lots' is not an integer"),
        ("COGMAN_RE_ENQUEUE", "maybe", "COGMAN_RE_ENQUEUE='maybe' is not a boolean"),
        ("COGMAN_GRACE_PERIOD", "soon", "COGMAN_GRACE_PERIOD='soon' is not a number"),
        ("COGMAN_CONCURRENCY", "0", "concurrency must be at least 1"),
    ],
)
def test_a_bad_environment_value_names_the_variable(monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=says):
        App("env")


def test_every_config_field_is_documented_with_its_variable():
    """docs/configuration.md has one table row per field, so the environment is documented in one place."""
    from dataclasses import fields
    from pathlib import Path

    from cogman.config.environment import markdown_table, variable

    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    missing = [f.name for f in fields(Config) if f"`{variable(f.name)}`" not in text]
    assert missing == []
    assert markdown_table() in text, "regenerate the table: python -m cogman.environment"
