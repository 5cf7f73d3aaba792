"""How long one query script holds Redis, with N records indexed: cogman's queries against the old one.

A Lua script runs alone on the server: while it runs, no other client (a worker's write, a waiter) is
served. This starts a redis-server of its own on a free port (nothing shared is touched), fills the
indexes a Redis backend keeps with N task ids (one name, all ``queued``, every other one with primary
key ``k1``; the newest thousand with a record hash), turns SLOWLOG on for every command, and runs each
query shape the API, the CLI and ``/metrics`` use, with the current code and with the single-call
intersection cogman had before issue 19 (``--old``). It prints, per shape, the script calls made and
the longest one as the server timed it (SLOWLOG, microseconds):

    python bench/redis_queries_scale.py --records 10000000 --old

Memory: about 400 bytes a record for the five indexes (4 GB at 10 M).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cogman import Config, Status  # noqa: E402
from cogman.backends import codec  # noqa: E402
from cogman.backends.base import TaskQuery  # noqa: E402
from cogman.backends.codec import to_us  # noqa: E402
from cogman.backends.redis import scripts  # noqa: E402
from cogman.backends.redis.backend import RedisBackend  # noqa: E402
from cogman.record import utcnow  # noqa: E402
from tests.integration.test_backend_contract import record  # noqa: E402
from tests.integration.test_redis_queries_scale import OLD_QUERY  # noqa: E402
from tests.ports import free_ports  # noqa: E402

#: SLOWLOG's threshold in microseconds: above what one command inside a script takes.
SLOWLOG_FROM = 20

FILL = """
local key, first, last, step, base = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for i = first, last, step do redis.call('ZADD', key, base - i, 't' .. i) end
return 0
"""


def fill(client: redis.Redis, records: int, base: int) -> None:
    """The indexes of N ``queued`` records named ``job``, newest first by id number, built on the server."""
    keys = [
        "cogman:idx:all",
        "cogman:idx:status:queued",
        "cogman:idx:name:job",
        f"cogman:idx:ns:queued:{codec.dumps('job')}",
    ]
    script = client.register_script(FILL)
    chunk = 200_000
    for key in keys:
        for first in range(0, records, chunk):
            script(keys=[key], args=[first, min(records, first + chunk) - 1, 1, base])
    for first in range(1, records, chunk):
        script(keys=["cogman:idx:pk:k1"], args=[first, min(records, first + chunk) - 1, 2, base])


def add_hashes(backend: RedisBackend, base: int, count: int) -> None:
    """Record hashes for the newest ``count`` ids, so pages read real records."""
    pipe = backend.client.pipeline(transaction=False)
    for i in range(count):
        fields = codec.hash_fields(record())
        pipe.hset(backend.key(f"t{i}"), mapping=dict(zip(fields[::2], fields[1::2], strict=True)))
    pipe.execute()


def shapes(records: int) -> dict[str, TaskQuery]:
    return {
        "count by name and status (/metrics)": TaskQuery(status=Status.QUEUED, name="job", limit=0),
        "count by status (/metrics)": TaskQuery(status=Status.QUEUED, limit=0),
        "list by name and status, first page of 50": TaskQuery(status=Status.QUEUED, name="job", limit=50),
        "list by name and status, page at the middle": TaskQuery(
            status=Status.QUEUED, name="job", skip=records // 2, limit=50
        ),
        "list all, first page of 50": TaskQuery(limit=50),
        "list by status and primary key, first page (total: the whole key)": TaskQuery(
            status=Status.QUEUED, primary_key="k1", limit=50
        ),
    }


def old_query(backend: RedisBackend, query: TaskQuery) -> None:
    keys = []
    if query.status is not None:
        keys.append(backend.index_key("status", query.status.value))
    if query.name is not None:
        keys.append(backend.index_key("name", query.name))
    if query.primary_key is not None:
        keys.append(backend.index_key("pk", query.primary_key))
    script = backend.client.register_script(scripts.source(OLD_QUERY))
    args = [*backend._common(), backend._window_floor(), "+inf", query.skip, query.limit, "cogman:scratch:old"]
    script(args=[*args, *(keys or [backend.index_key("all")])])


def measure(server: redis.Redis, backend: RedisBackend, run: Any) -> tuple[int, float, float, float]:
    """(script calls, median and longest call in microseconds, wall seconds) of ``run()``, run once
    before to load its scripts (a first EVALSHA is refused, NOSCRIPT). SLOWLOG also logs the commands a
    script runs, so it logs from 20 us only (a call faster than that counts as 20 us)."""
    run()
    calls = [0]
    real = backend._run

    def counting(script: Any, args: list[Any]) -> Any:
        calls[0] += 1
        return real(script, args)

    backend._run = counting  # type: ignore[method-assign]
    server.slowlog_reset()
    began = time.perf_counter()
    try:
        run()
    finally:
        backend._run = real  # type: ignore[method-assign]
    wall = time.perf_counter() - began
    logged = [e["duration"] for e in server.slowlog_get(-1) if e["command"].startswith((b"EVALSHA", b"EVAL "))]
    durations = logged + [SLOWLOG_FROM] * max(0, calls[0] - len(logged)) or [SLOWLOG_FROM]
    return max(calls[0], len(logged)), statistics.median(durations), max(durations), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--old", action="store_true", help="also time the single-call intersection")
    args = parser.parse_args()
    port = free_ports()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd="/tmp",
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        server = redis.Redis.from_url(url, socket_timeout=600)
        for _ in range(300):
            try:
                server.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        backend = RedisBackend(url, Config(broker_url="memory://", backend_url=url))
        backend.client = redis.Redis.from_url(url, socket_timeout=600)  # the old intersection may take long
        began = time.perf_counter()
        fill(server, args.records, to_us(utcnow()))
        add_hashes(backend, 0, 1000)
        print(f"{args.records:,} records indexed in {time.perf_counter() - began:.0f} s; "
              f"used_memory {server.info('memory')['used_memory_human']}")  # fmt: skip
        server.config_set("slowlog-log-slower-than", SLOWLOG_FROM)
        server.config_set("slowlog-max-len", 1_000_000)
        print("| query | script calls | median call (ms) | longest call (ms) | wall (s) | old: one call (ms) |")
        print("|---|---|---|---|---|---|")
        for label, query in shapes(args.records).items():
            calls, median, longest, wall = measure(server, backend, lambda q=query: backend.query(q))
            old = ""
            if args.old:
                old = f"{measure(server, backend, lambda q=query: old_query(backend, q))[2] / 1000:,.2f}"
            print(f"| {label} | {calls:,} | {median / 1000:,.2f} | {longest / 1000:,.2f} | {wall:.2f} | {old} |")
        backend.close()
    finally:
        process.kill()
        process.wait(30)


if __name__ == "__main__":
    main()
