"""The private redis-server of bench/log_scale.py, and what it waits on: nothing shared is touched."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from tests.ports import free_ports


def count_keys(server: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in server.scan_iter(match=pattern, count=5000))


def settle(server: redis.Redis, pattern: str, seconds: float) -> bool:
    """Waits until no key matches ``pattern`` (the done tokens, DONE_TTL). Redis's own active expiry
    stops sampling while under a tenth of the keys with a TTL are expired, so tokens among millions of
    week-long records stay in memory long after their TTL; SCAN reclaims each expired key it visits, as
    a client reading them would."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not count_keys(server, pattern):
            return True
        time.sleep(2.0)
    return False


def available() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def start_server(workdir: Path, maxmemory: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_ports()
    workdir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--maxmemory",
            str(maxmemory),
            "--maxmemory-policy",
            "noeviction",
        ],
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        close_fds=True,
        cwd=workdir,
    )
    url = f"redis://127.0.0.1:{port}/0"
    probe = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            probe.ping()
            return process, url
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server on port {port} did not answer")
