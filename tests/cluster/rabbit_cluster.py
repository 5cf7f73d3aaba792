"""A three-node RabbitMQ cluster on 127.0.0.1 for the cluster tests, started from Debian's rabbitmq-server.

Each node has its own name (``cogman-c1@<host>``...), AMQP port (5681-5683), distribution port (25681-25683,
below the ephemeral range and away from RabbitMQ's 5672/25672), data, log and pid files under one temporary
folder, no plugin (the management plugin would open a port per node), and its own Erlang cookie in that
folder's ``HOME``: the shared node (``rabbit@localhost``, the rabbitmq user's cookie) can neither be reached
by these nodes' CLI calls nor joined to them. Every ``rabbitmqctl`` call here names its node (``-n``) and
runs the CLI directly (Debian's wrapper would switch to the rabbitmq user, whose cookie is the shared
node's).

The nodes are started with every inherited descriptor closed (``close_fds``, a new session, stdio to
files): a lock the caller holds (the suite's service lock) must not stay held by three Erlang VMs.
Stopped by pid: SIGTERM to the start script, which stops RabbitMQ and waits for it; a node killed with
SIGKILL (a fault test) is its Erlang VM's pid, read from ``RABBITMQ_PID_FILE``.

``python -m tests.cluster.rabbit_cluster up DIR`` / ``down DIR`` do the same by hand (tests/cluster/up.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
AMQP_PORTS = (5681, 5682, 5683)
DIST_PORTS = (25681, 25682, 25683)
HOST = socket.gethostname().split(".")[0]


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition`` until it is truthy; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Node:
    index: int
    base: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"cogman-c{self.index + 1}@{HOST}"

    @property
    def port(self) -> int:
        return AMQP_PORTS[self.index]

    @property
    def pid_file(self) -> Path:
        return self.base / f"c{self.index + 1}.pid"

    def env(self) -> dict[str, str]:
        """What the start script and the CLI need; nothing of the caller's RABBITMQ_* settings leaks in."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return env | {
            "HOME": str(self.base),  # the cookie in it is this cluster's alone
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),  # not /etc's (NODENAME=rabbit@...)
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(DIST_PORTS[self.index]),
            "RABBITMQ_CONFIG_FILE": str(self.base / f"c{self.index + 1}.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def write_config(self) -> None:
        (self.base / f"c{self.index + 1}.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
        )

    def ctl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """``rabbitmqctl -n <this node> ...``: never without ``-n`` (that would be the shared node)."""
        result = subprocess.run(
            [CTL, "-n", self.name, *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            detail = result.stderr.strip() or result.stdout.strip()
            raise RuntimeError(f"rabbitmqctl -n {self.name} {' '.join(args)} failed: {detail}")
        return result.stdout

    def start(self) -> None:
        """Start the node's VM; returns at once (``await_startup`` waits for it)."""
        self.pid_file.unlink(missing_ok=True)
        log = open(self.base / f"c{self.index + 1}.out", "ab")  # noqa: SIM115 - the child's stdout, kept
        try:
            self.process = subprocess.Popen(
                [SERVER],
                env=self.env(),
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                start_new_session=True,
            )
        finally:
            log.close()

    def await_startup(self, timeout: float = 120) -> None:
        wait_for(self.pid_file.exists, timeout, f"{self.name} to write its pid file")
        self.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 10)
        wait_for(lambda: port_open(self.port), timeout, f"{self.name} to listen on {self.port}")

    def beam_pid(self) -> int:
        return int(self.pid_file.read_text().strip())

    def kill(self) -> None:
        """SIGKILL of the Erlang VM, as a crashed machine: no goodbye to the cluster or the clients."""
        os.kill(self.beam_pid(), signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)
            self.process = None

    def stop(self, timeout: float = 60) -> None:
        """Stop by pid: SIGTERM to the start script (it stops RabbitMQ and waits), SIGKILL past ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError, ValueError):
                os.kill(self.beam_pid(), signal.SIGKILL)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@dataclass
class Cluster:
    base: Path
    nodes: list[Node] = field(default_factory=list)
    #: Seconds the last start and stop took (reported by the tests, docs/scaling.md).
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls, base: Path | None = None) -> Cluster:
        base = base or Path(tempfile.mkdtemp(prefix="cogman-rabbit-cluster-"))
        base.mkdir(parents=True, exist_ok=True)
        cookie = base / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        cluster = cls(base, [Node(index, base) for index in range(3)])
        for node in cluster.nodes:
            node.write_config()
        return cluster

    def url(self, order: tuple[int, ...] = (0, 1, 2), vhost: str = "/") -> str:
        """cogman's node-list URL: ``amqp://...:5681//;amqp://...:5682//;...``, tried in ``order``."""
        path = "/" if vhost == "/" else vhost
        return ";".join(f"amqp://guest:guest@127.0.0.1:{self.nodes[i].port}/{path}" for i in order)

    def start(self) -> None:
        """Start the three nodes at once, then join the second and third to the first."""
        busy = [node.port for node in self.nodes if port_open(node.port)]
        if busy:
            raise RuntimeError(f"port(s) {busy} already taken on 127.0.0.1: another cluster running? (down.sh)")
        began = time.monotonic()
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.await_startup()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        first.ctl("await_online_nodes", "3", "--timeout", "120")
        self.timings["start"] = time.monotonic() - began

    def running_nodes(self, via: Node) -> set[str]:
        status = json.loads(via.ctl("cluster_status", "--formatter", "json"))
        return set(status.get("running_nodes", []))

    def node_named(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def stop(self) -> None:
        began = time.monotonic()
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()
        self.timings["stop"] = time.monotonic() - began


def _pids(base: Path) -> list[int]:
    return [int(p.read_text().strip()) for p in sorted(base.glob("c*.pid")) if p.read_text().strip()]


def main(argv: list[str]) -> int:
    """``up DIR``: start and join, print the URL, leave running; ``down DIR``: stop the VMs by their pids."""
    if len(argv) != 2 or argv[0] not in {"up", "down"}:
        print("usage: python -m tests.cluster.rabbit_cluster up|down DIR", file=sys.stderr)
        return 2
    base = Path(argv[1]).resolve()
    if argv[0] == "up":
        cluster = Cluster.create(base)
        cluster.start()
        print(f"started in {cluster.timings['start']:.1f} s; broker URL: {cluster.url()}")
        print(f"rabbitmqctl: HOME={base} {CTL} -n {cluster.nodes[0].name} cluster_status")
        return 0
    began = time.monotonic()
    pids = _pids(base)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        with contextlib.suppress(AssertionError):
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 60, f"pid {pid} to exit")  # type: ignore[misc]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    print(f"stopped {len(pids)} node(s) in {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
