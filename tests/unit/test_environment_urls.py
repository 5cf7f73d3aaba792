"""URLs from the environment: a comma separates backends, but never splits one URL's host list."""

from __future__ import annotations

from cogman import Config


def test_a_mongodb_host_list_stays_one_url():
    url = "mongodb://user:pw@h1:27017,h2:27017,h3:27017/?replicaSet=rs0"
    config = Config.from_env({"COGMAN_BACKEND_URL": url, "COGMAN_BROKER_URL": "memory://"})
    assert config.backend_url == url


def test_a_comma_between_urls_still_makes_a_list():
    text = "redis://127.0.0.1:6379/0, mongodb://h1:27017,h2:27017/?replicaSet=rs0"
    config = Config.from_env({"COGMAN_BACKEND_URL": text})
    assert config.backend_url == ["redis://127.0.0.1:6379/0", "mongodb://h1:27017,h2:27017/?replicaSet=rs0"]


def test_cors_origins_are_split_on_commas():
    config = Config.from_env({"COGMAN_API_CORS_ORIGINS": "https://a.example, https://b.example"})
    assert config.api_cors_origins == ["https://a.example", "https://b.example"]
