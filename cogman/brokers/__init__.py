"""Brokers: the protocol (base.py), the in-memory broker (memory.py) and the RabbitMQ broker (rabbitmq/),
chosen by URL (``create_broker``); a worker's count of the deliveries it holds unacked (held.py).

May import only the shared vocabulary (``errors``, ``priority``, ``message``, ``delays``, ``config``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cogman.brokers.base import DEAD_LETTER_QUEUE, Broker, Consumer, Delivery, PublishListener, Receipt, queue_names
from cogman.errors import ConfigError

if TYPE_CHECKING:
    from cogman.config.settings import Config

__all__ = [
    "DEAD_LETTER_QUEUE",
    "Broker",
    "Consumer",
    "Delivery",
    "PublishListener",
    "Receipt",
    "create_broker",
    "queue_names",
]


def create_broker(config: Config) -> Broker:
    """The broker named by ``config.broker_url``: ``memory://`` or ``amqp://`` (also ``amqps://``)."""
    url = config.broker_url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory" or config.eager:
        from cogman.brokers.memory import MemoryBroker

        return MemoryBroker(
            config.high_priority_queue_count,
            config.low_priority_queue_count,
            max_redeliveries=config.max_redeliveries,
            prefix=config.queue_prefix,
        )
    if scheme in ("amqp", "amqps", "pyamqp"):
        from cogman.brokers.rabbitmq.broker import RabbitMQBroker

        return RabbitMQBroker(url, config)
    raise ConfigError(f"unsupported broker URL {url!r}; use memory:// or amqp://user:password@host:5672//")
