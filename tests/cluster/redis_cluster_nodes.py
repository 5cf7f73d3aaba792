"""A Redis Cluster on 127.0.0.1 for the cluster tests: three primaries, three replicas.

Six ``redis-server --cluster-enabled yes`` processes on six consecutive ports picked by tests/ports.py,
their cluster bus on the six after them (``cluster-port``: the default, port + 10000, may fall in the
ephemeral range or on a port in use), each with its config and data directory (nodes.conf) under one
temporary folder, joined by ``redis-cli --cluster create ... --cluster-replicas 1``. No persistence (a
killed node comes back empty and resyncs as a replica). Started and stopped as redis_nodes.py starts
the Sentinel set: foreground, inherited descriptors closed, a new session, always by pid.
``cluster-node-timeout`` is short (NODE_TIMEOUT_MS) so a replica takes over from a killed primary
within a few seconds.

``python -m tests.cluster.redis_cluster_nodes`` starts a cluster, prints its URL and waits for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.cluster.redis_nodes import Server, serve, started, wait_for

NODE_TIMEOUT_MS = 2000


@dataclass
class RedisClusterNodes:
    base: Path
    first_port: int
    servers: list[Server] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The backend URL naming two seed nodes (any would do)."""
        return f"redis+cluster://127.0.0.1:{self.servers[0].port},127.0.0.1:{self.servers[1].port}"

    def node(self, port: int) -> Server:
        return next(server for server in self.servers if server.port == port)

    def primary_of(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot, as the cluster says now."""
        with redis.RedisCluster(host="127.0.0.1", port=self.live_port()) as client:
            return int(client.get_node_from_key(key).port)

    def live_port(self) -> int:
        return next(s.port for s in self.servers if s.process is not None and s.process.poll() is None)

    def state(self, port: int) -> dict[str, str]:
        with redis.Redis(port=port, socket_timeout=2) as client:
            raw = client.execute_command("CLUSTER", "INFO")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.split() if ":" in line)

    def healthy(self) -> bool:
        """Every running node sees the cluster ok, all slots served by a live primary."""
        for server in self.servers:
            if server.process is None or server.process.poll() is not None:
                continue
            state = self.state(server.port)
            if state.get("cluster_state") != "ok" or state.get("cluster_slots_ok") != "16384":
                return False
        return True

    def start(self) -> None:
        for index in range(6):
            port = self.first_port + index
            folder = self.base / f"n{port}"
            folder.mkdir(parents=True)
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f'dir "{folder}"',
                "daemonize no",
                'save ""',
                "appendonly no",
                "cluster-enabled yes",
                f"cluster-config-file {folder / 'nodes.conf'}",
                f"cluster-port {port + 6}",
                f"cluster-node-timeout {NODE_TIMEOUT_MS}",
            ]
            config = folder / "redis.conf"
            config.write_text("\n".join(lines) + "\n")
            self.servers.append(Server(port, config, folder / "log"))
        for server in self.servers:
            server.start()
        nodes = [f"127.0.0.1:{server.port}" for server in self.servers]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            close_fds=True,
            timeout=60,
        )
        wait_for(self.healthy, 60, "the six nodes to agree the cluster is ok")
        wait_for(self._replicas_online, 60, "each primary's replica to sync")

    def _replicas_online(self) -> bool:
        for server in self.servers:
            with redis.Redis(port=server.port, socket_timeout=2) as client:
                info = client.info("replication")
            online = [
                k
                for k, v in info.items()
                if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
            ]
            if info.get("role") == "master" and not online:
                return False
        return True

    def restart_dead(self) -> None:
        """Start again any node a test killed (it rejoins as a replica) and wait for a healthy cluster."""
        for server in self.servers:
            if server.process is None or server.process.poll() is not None:
                server.start()
        wait_for(self.healthy, 60, "the cluster to be ok again")
        wait_for(self._replicas_online, 60, "each primary's replica to sync again")

    def stop(self) -> None:
        for server in reversed(self.servers):
            with contextlib.suppress(OSError):
                server.stop()


def redis_cluster() -> contextlib.AbstractContextManager[RedisClusterNodes]:
    """A started cluster (six client ports, six bus ports), stopped by pid at the end whatever happens."""
    return started(RedisClusterNodes, "rediscluster", 12)


if __name__ == "__main__":
    serve(redis_cluster())
