"""A Redis Sentinel set on 127.0.0.1 for the cluster tests: one primary, one replica, three sentinels.

Five ``redis-server`` processes (the sentinels with ``--sentinel``), on five consecutive ports picked by
tests/ports.py below the ephemeral range, each with its config file and data directory under one temporary
folder (Sentinel rewrites its config file as it learns the set; a server's is rewritten when a sentinel
turns it into a replica). No persistence: a killed server comes back empty and resyncs from the primary.
Started in the foreground (no ``--daemonize``) with every inherited descriptor closed and a new session,
so a lock the caller holds (the suite's service lock) is never held by a node, and each pid is the
server's own: stopped with SIGTERM, killed with SIGKILL (the fault tests), always by that pid.

``python -m tests.cluster.redis_nodes`` starts a set, prints its URL and waits for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import redis

from tests.ports import free_ports

SERVICE = "cogman-c3"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition`` until it is truthy; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Server:
    port: int
    config: Path
    log: Path
    sentinel: bool = False
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                ["redis-server", str(self.config), *(["--sentinel"] if self.sentinel else [])],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                close_fds=True,
                start_new_session=True,
            )
        wait_for(self.answers, 20, f"redis-server on port {self.port} (log: {self.log})")

    def answers(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"redis-server on port {self.port} exited; see {self.log}")
        try:
            with redis.Redis(port=self.port, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send ``sig`` to this server's pid and reap it (SIGKILL if SIGTERM is not enough in 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, sig)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@dataclass
class SentinelSet:
    base: Path
    first_port: int
    servers: list[Server] = field(default_factory=list)  # the two data nodes, then the three sentinels

    @property
    def data(self) -> list[Server]:
        return self.servers[:2]

    @property
    def sentinels(self) -> list[Server]:
        return self.servers[2:]

    @property
    def url(self) -> str:
        """The backend URL, database 0 of the service."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def primary_port(self) -> int:
        """The primary's port as a majority of the sentinels would hand it to a client now."""
        with redis.Redis(port=self.sentinels[0].port, socket_timeout=2) as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def node(self, port: int) -> Server:
        return next(server for server in self.data if server.port == port)

    def replicas_in_sync(self, port: int) -> int:
        """Replicas the node on ``port`` reports connected and online."""
        with redis.Redis(port=port, socket_timeout=2) as client:
            info = client.info("replication")
        return sum(1 for key, value in info.items() if key.startswith("slave") and value.get("state") == "online")

    def start(self) -> None:
        primary = self.first_port
        for index in range(5):
            port = self.first_port + index
            folder = self.base / f"n{port}"
            folder.mkdir(parents=True)
            lines = [f"port {port}", "bind 127.0.0.1", f'dir "{folder}"', "daemonize no", 'save ""', "appendonly no"]
            if index == 1:
                lines.append(f"replicaof 127.0.0.1 {primary}")
            if index >= 2:
                lines += [
                    "sentinel resolve-hostnames no",
                    f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2",
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {SERVICE} 1",
                ]
            config = folder / ("sentinel.conf" if index >= 2 else "redis.conf")
            config.write_text("\n".join(lines) + "\n")
            self.servers.append(Server(port, config, folder / "log", sentinel=index >= 2))
        for server in self.servers:
            server.start()
        wait_for(lambda: self.replicas_in_sync(primary) == 1, 30, "the replica to sync with the primary")
        wait_for(self._sentinels_agree, 30, "the three sentinels to know each other and the replica")

    def _sentinels_agree(self) -> bool:
        for server in self.sentinels:
            with redis.Redis(port=server.port, socket_timeout=2) as sentinel:
                state = sentinel.sentinel_master(SERVICE)
            if int(state.get("num-other-sentinels", 0)) < 2 or int(state.get("num-slaves", 0)) < 1:
                return False
        return True

    def stop(self) -> None:
        for server in reversed(self.servers):
            with contextlib.suppress(OSError):
                server.stop()


class Servers(Protocol):
    @property
    def url(self) -> str: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


Nodes = TypeVar("Nodes", bound=Servers)


@contextlib.contextmanager
def started(kind: Callable[[Path, int], Nodes], name: str, ports: int) -> Iterator[Nodes]:
    """``kind``'s servers on ``ports`` free ports in a temporary folder, stopped by pid at the end whatever
    happens (they keep nothing on disk)."""
    with tempfile.TemporaryDirectory(prefix=f"cogman-{name}-") as folder:
        nodes = kind(Path(folder), free_ports(ports))
        try:
            nodes.start()
            yield nodes
        finally:
            nodes.stop()


def serve(nodes: contextlib.AbstractContextManager[Servers]) -> None:
    """Run from a shell (``python -m tests.cluster...``): start, print the URL, stop on Ctrl-C."""
    with nodes as running:
        print(running.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


def sentinel_set() -> contextlib.AbstractContextManager[SentinelSet]:
    """A started set, stopped by pid at the end whatever happens."""
    return started(SentinelSet, "sentinel", 5)


if __name__ == "__main__":
    serve(sentinel_set())
