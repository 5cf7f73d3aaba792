"""The harness's own RabbitMQ handle: make sure the vhost exists, count, purge and delete queues.

A fresh channel per operation: RabbitMQ closes a channel that asks about a missing queue (404), and
a missing queue is normal here (a system that never ran). Queues are purged between phases, not
deleted, because a Dramatiq producer declares its queue once per process and would then publish
into nothing; they are deleted before the first round and after the last.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterable
from typing import Any

from amqp.exceptions import AccessRefused, ChannelError, NotAllowed
from kombu import Connection

from bench.settings import VHOST


def ensure_vhost(url: str) -> None:
    """Connect once; if the vhost is missing or not ours, create it with rabbitmqctl when available."""
    try:
        _probe(url)
        return
    except (AccessRefused, NotAllowed) as exc:
        rabbitmqctl = shutil.which("rabbitmqctl")
        commands = vhost_commands(VHOST)
        if rabbitmqctl is None:
            raise SystemExit(
                f"bench: cannot open vhost {VHOST!r} ({exc}); create it: "
                + "; ".join("rabbitmqctl " + " ".join(c) for c in commands)
            ) from None
        for command in commands:
            subprocess.run([rabbitmqctl, *command], check=True, capture_output=True, timeout=60)
    _probe(url)


def vhost_commands(vhost: str) -> list[list[str]]:
    """The rabbitmqctl arguments that create ``vhost`` and let guest use all of it."""
    return [["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]]


def _probe(url: str) -> None:
    with Connection(url, connect_timeout=5) as connection:
        connection.connect()


class Admin:
    def __init__(self, url: str) -> None:
        self.url = url
        self.connection = Connection(url, connect_timeout=5)
        self.connection.connect()

    def server_version(self) -> str:
        properties: dict[str, Any] = self.connection.connection.server_properties
        return str(properties.get("version", "?"))

    def _on_channel(self, action: str, name: str) -> Any:
        try:
            return self._act(action, name)
        except self.connection.connection_errors:
            # The connection died (e.g. a Ctrl-C interrupted a frame half-written): open a new one, once.
            with contextlib.suppress(Exception):
                self.connection.close()
            self.connection = Connection(self.url, connect_timeout=5)
            self.connection.connect()
            return self._act(action, name)

    def _act(self, action: str, name: str) -> Any:
        channel = self.connection.channel()
        try:
            if action == "depth":
                return channel.queue_declare(queue=name, passive=True).message_count
            if action == "purge":
                return channel.queue_purge(queue=name)
            return channel.queue_delete(queue=name)
        except ChannelError:  # not found: nothing to count, purge or delete
            return 0
        finally:
            with contextlib.suppress(Exception):  # already closed by the broker's 404
                channel.close()

    def depth(self, names: Iterable[str]) -> int:
        return sum(int(self._on_channel("depth", name) or 0) for name in names)

    def purge(self, names: Iterable[str]) -> None:
        for name in names:
            self._on_channel("purge", name)

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            self._on_channel("delete", name)

    def wait_depth(self, names: Iterable[str], at_least: int, timeout: float = 30.0) -> float:
        """Wait until the queues hold ``at_least`` ready messages; returns the wall-clock time they did."""
        names = list(names)
        deadline = time.monotonic() + timeout
        while self.depth(names) < at_least:
            if time.monotonic() > deadline:
                raise TimeoutError(f"queues {', '.join(names)} did not reach {at_least} message(s) in {timeout:.0f} s")
            time.sleep(0.01)
        return time.time()

    def close(self) -> None:
        self.connection.release()
