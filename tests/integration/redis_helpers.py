"""Cleaning up after a test that gave its apps a private Redis key prefix."""

from __future__ import annotations

import redis


def drop_prefix(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix:`` so a test's records never reach the next one."""
    connection = redis.Redis.from_url(redis_url)
    try:
        keys = list(connection.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            connection.delete(*keys)
    finally:
        connection.close()
