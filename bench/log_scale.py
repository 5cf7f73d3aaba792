"""The Redis task log at scale: memory per record, insert rate, query latency, and memory as records expire.

Sizing a Redis task log needs a figure per record measured through the real scripts (the hash, its five
index entries, the wake-up token of a finished task), and the API's queries must stay fast however many
records the window holds. This starts a redis-server of its own on a free port (127.0.0.1, no
persistence, nothing shared touched), writes N records through ``RedisBackend.create`` and the
transition script in batches (a mix of four task names, statuses moved queued -> in_progress ->
success|failed, a primary key on one in five), then times what ``/list`` and ``/daterangecount`` call:

    python bench/log_scale.py --records 10000000          # default TTL (7 days), records spread over 6 days
    python bench/log_scale.py --records 200000 --ttl 60 --spread-days 0   # memory until they expire

With ``--ttl`` below the done-token TTL it also keeps a trickle of new records going (so the indexes are
written, and so trimmed, rather than expiring whole) and samples used_memory until every bulk record's
hash and index entries are gone. Results: a table, and JSON in bench/results/log-scale-*.json.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.log_scale_server import available, count_keys, settle, start_server  # noqa: E402
from cogman import Config, Status  # noqa: E402
from cogman.backends import codec  # noqa: E402
from cogman.backends.base import TaskQuery  # noqa: E402
from cogman.backends.codec import to_us  # noqa: E402
from cogman.backends.redis import scripts  # noqa: E402
from cogman.backends.redis.backend import RedisBackend  # noqa: E402
from cogman.backends.redis.keys import DONE_TTL_MS  # noqa: E402
from cogman.priority import Priority  # noqa: E402
from cogman.record import TaskRecord, utcnow  # noqa: E402

NAMES = (("resize_image", 50), ("send_email", 30), ("charge_card", 15), ("rebuild_index", 5))
#: Records written per batch: one create call (the backend slices it by 500) and one call per status.
BATCH = 2000
PREFIX = "cogman"
#: A bound on a record's bytes (measured: about 1,800 with the done token), to refuse a run the machine
#: cannot hold before the kernel's OOM killer picks a process, possibly a shared server.
BOUND_PER_RECORD = 2000
#: Memory left to the machine's other processes.
HEADROOM = 4 << 30


def plan(i: int) -> tuple[str, Status, str | None]:
    """Record ``i``'s name, final status and primary key, deterministic so every run stores the same mix:
    1 % left queued, 1 % in progress, 4 % failed, 94 % success; a primary key (50,000 distinct) on 1 in 5."""
    bucket = i % 100
    name_at = ((i // 100) * 37 + bucket * 11) % 100  # independent of the status: every pair occurs
    name = NAMES[-1][0]
    for candidate, weight in NAMES:
        if name_at < weight:
            name = candidate
            break
        name_at -= weight
    status = (
        Status.QUEUED
        if bucket == 0
        else Status.IN_PROGRESS
        if bucket == 1
        else Status.FAILED
        if bucket < 6
        else Status.SUCCESS
    )
    return name, status, (f"customer-{(i // 5) % 50_000}" if i % 5 == 0 else None)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100), so p99 of 200 calls is the second slowest, a real call."""
    if not values or not 0 < q <= 100:
        raise ValueError(f"percentile needs values and 0 < q <= 100, got {len(values)} value(s) and q={q}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def per_record(before: int, after: int, records: int) -> float:
    if records <= 0:
        raise ValueError(f"records must be positive, got {records}")
    return (after - before) / records


def _record(i: int, created: datetime, tag: str) -> TaskRecord:
    name, _, pk = plan(i)
    task_id = f"{tag}{uuid.uuid4()}"
    return TaskRecord(
        task_id=task_id,
        name=name,
        original_task_id=task_id,
        priority=Priority.HIGH,
        payload={"args": [i, "s3://bucket/key.jpg"], "kwargs": {"width": 640}},
        status=Status.QUEUED,
        primary_key=pk,
        created_at=created,
        updated_at=created,
    )


def write(backend: RedisBackend, first: int, count: int, start_us: int, step_us: float, tag: str = "") -> None:
    """Records first..first+count-1 created at start_us + i * step_us, moved to their final status the
    way a worker moves them (in_progress, then success with a duration and a small result, or failed)."""
    records = [
        _record(i, datetime.fromtimestamp((start_us + i * step_us) / 1e6, UTC), tag)
        for i in range(first, first + count)
    ]
    backend.create(records)
    moving: dict[Status, list[str]] = {status: [] for status in (Status.IN_PROGRESS, Status.SUCCESS, Status.FAILED)}
    for record, i in zip(records, range(first, first + count), strict=True):
        final = plan(i)[1]
        if final is not Status.QUEUED:
            moving[Status.IN_PROGRESS].append(record.task_id)
        if final in (Status.SUCCESS, Status.FAILED):
            moving[final].append(record.task_id)
    backend.transition_many(moving[Status.IN_PROGRESS], Status.IN_PROGRESS)
    backend.transition_many(moving[Status.FAILED], Status.FAILED)
    now = codec.dumps(utcnow().isoformat())
    fields = ["updated_at", now, codec.AT + "success", now, "duration", "0.042", "result", '{"ok": true}']
    link = backend._link()
    for layout, chunk in backend._chunks(moving[Status.SUCCESS]):  # the TRANSITION script, batched per shard
        args = [*layout.common(), scripts.encoded(Status.SUCCESS), "0", 4, *fields, *chunk]
        backend.buffer.write(link.script(backend._transition, args, layout), "move to success")


def _backend(url: str, ttl: float) -> RedisBackend:
    return RedisBackend(url, Config(broker_url="memory://", backend_url=url, redis_ttl=ttl, redis_prefix=PREFIX))


def _writer(url: str, ttl: float, first: int, last: int, start_us: int, step_us: float) -> int:
    backend = _backend(url, ttl)
    try:
        for at in range(first, last, BATCH):
            write(backend, at, min(BATCH, last - at), start_us, step_us)
        if not backend.flush(60):
            raise RuntimeError("writes parked in memory were not written")
    finally:
        backend.close()
    return last - first


def insert(url: str, ttl: float, records: int, writers: int, spread_s: float) -> float:
    """Seconds to write ``records`` in ``writers`` processes, created over the last ``spread_s`` seconds."""
    now = to_us(utcnow())
    start_us, step_us = now - int(spread_s * 1e6), spread_s * 1e6 / records
    cuts = [records * w // writers for w in range(writers + 1)]
    began = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(writers) as pool:
        jobs = [(url, ttl, cuts[w], cuts[w + 1], start_us, step_us) for w in range(writers)]
        if sum(pool.starmap(_writer, jobs)) != records:
            raise RuntimeError("a writer wrote fewer records than asked")
    return time.perf_counter() - began


def shapes(now: datetime) -> dict[str, Any]:
    """What ``/list`` (limit 10, its default) and ``/daterangecount`` call, per filter."""
    day = (now - timedelta(days=3), now - timedelta(days=2))
    return {
        "list, no filter": lambda b: b.query(TaskQuery(limit=10)),
        "list, name": lambda b: b.query(TaskQuery(name="charge_card", limit=10)),
        "list, status": lambda b: b.query(TaskQuery(status=Status.FAILED, limit=10)),
        "list, name + status": lambda b: b.query(TaskQuery(name="rebuild_index", status=Status.FAILED, limit=10)),
        "list, primary_key": lambda b: b.query(TaskQuery(primary_key="customer-123", limit=10)),
        "list, one-day window": lambda b: b.query(TaskQuery(created_after=day[0], created_before=day[1], limit=10)),
        "list, name + status, page 1000": lambda b: b.query(
            TaskQuery(name="send_email", status=Status.SUCCESS, skip=10_000, limit=10)
        ),
        "daterangecount, one day by hour": lambda b: b.count_by_status(day[0], day[1], 3600.0),
        "daterangecount, default (30 days by day)": lambda b: b.count_by_status(now - timedelta(days=30), now, 86400.0),
    }


def latencies(backend: RedisBackend, calls: int) -> dict[str, dict[str, float]]:
    out = {}
    for label, call in shapes(utcnow()).items():
        call(backend)  # loads the scripts (a first EVALSHA is refused, NOSCRIPT)
        times = []
        for _ in range(calls):
            began = time.perf_counter()
            result = call(backend)
            times.append((time.perf_counter() - began) * 1000)
        total = result.total if hasattr(result, "total") else sum(b.total for b in result)
        out[label] = {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "matched": total}
    return out


def old_index_entries(server: redis.Redis, below: int) -> int:
    """Index entries scored below ``below`` (the bulk's), over every index key: what trimming must remove."""
    pipe = server.pipeline(transaction=False)
    for key in server.scan_iter(match=f"{PREFIX}:idx:*", count=5000):
        pipe.zcount(key, "-inf", f"({below}")
    return sum(pipe.execute())


def expiry(server: redis.Redis, url: str, ttl: float, bulk_end: int, baseline: int) -> list[dict[str, Any]]:
    """Samples until the bulk's hashes, index entries and done tokens are gone, writing ten records a
    second meanwhile so the indexes are trimmed by writes (as in production) rather than expiring whole."""
    backend, samples, began, i = _backend(url, ttl), [], time.monotonic(), 0
    deadline = began + max(ttl, DONE_TTL_MS / 1000) + 180
    try:
        while time.monotonic() < deadline:
            write(backend, i, 10, to_us(utcnow()), 0, tag="trickle-")
            i += 10
            if i % 50 == 0:
                info = server.info("memory")["used_memory"]
                sample = {
                    "s": round(time.monotonic() - began, 1),
                    "used_memory_mb": round((info - baseline) / 1e6, 2),
                    "bulk_hashes": count_keys(server, f"{PREFIX}:task:[^t]*"),
                    "bulk_index_entries": old_index_entries(server, bulk_end),
                    "done_tokens": count_keys(server, f"{PREFIX}:done:[^t]*"),
                    "trickle_records": i,
                }
                samples.append(sample)
                print(sample, flush=True)
                if not (sample["bulk_hashes"] or sample["bulk_index_entries"] or sample["done_tokens"]):
                    break
            time.sleep(1.0)  # the trickle's pace, not a wait for an event
    finally:
        backend.close()
    return samples


def arguments(description: str, records: int) -> argparse.ArgumentParser:
    """The options this script shares with bench/log_scale_cluster.py."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=records)
    parser.add_argument("--ttl", type=float, default=Config.redis_ttl, help="redis_ttl in seconds")
    parser.add_argument("--spread-days", type=float, default=6.0, help="created_at spread over the past days")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200)
    return parser


def main() -> None:
    parser = arguments(__doc__, 10_000_000)
    parser.add_argument("--no-settle", action="store_true", help="skip waiting for the done tokens to expire")
    args = parser.parse_args()
    if args.records <= 0 or args.writers <= 0 or args.calls <= 0 or args.ttl < 1:
        parser.error("--records, --writers and --calls must be positive, --ttl at least 1")
    if args.spread_days * 86400 >= args.ttl and args.spread_days > 0:
        parser.error(f"--spread-days {args.spread_days} reaches past --ttl {args.ttl} s: records would be trimmed")
    room = available() - HEADROOM
    if args.records * BOUND_PER_RECORD > room:
        parser.error(
            f"--records {args.records:,} needs up to {args.records * BOUND_PER_RECORD / 1e9:.1f} GB; "
            f"{room / 1e9:.1f} GB available beyond the {HEADROOM >> 30} GiB headroom"
        )
    process, url = start_server(Path("/tmp") / f"log-scale-{uuid.uuid4().hex[:8]}", room)
    try:
        server = redis.Redis.from_url(url, socket_timeout=600)
        before = server.info("memory")["used_memory"]
        seconds = insert(url, args.ttl, args.records, args.writers, args.spread_days * 86400)
        after = server.info("memory")["used_memory"]
        result: dict[str, Any] = {
            "records": args.records,
            "ttl_s": args.ttl,
            "spread_days": args.spread_days,
            "writers": args.writers,
            "insert_s": round(seconds, 1),
            "insert_per_s": round(args.records / seconds),
            "bytes_per_record_with_done_tokens": round(per_record(before, after, args.records)),
            "redis": server.info("server")["redis_version"],
            "when": utcnow().isoformat(timespec="seconds"),
        }
        print(json.dumps(result), flush=True)
        if args.ttl < DONE_TTL_MS / 1000:
            bulk_end = to_us(utcnow())
            result["expiry"] = expiry(server, url, args.ttl, bulk_end, before)
        else:
            backend = _backend(url, args.ttl)
            result["queries"] = latencies(backend, args.calls)
            backend.close()
            wait = DONE_TTL_MS / 1000 + 300
            result["done_tokens_expired"] = not args.no_settle and settle(server, f"{PREFIX}:done:*", wait)
            result["bytes_per_record"] = round(per_record(before, server.info("memory")["used_memory"], args.records))
            result["index_entries_per_record"] = round(
                sum(server.zcard(k) for k in server.scan_iter(match=f"{PREFIX}:idx:*", count=5000)) / args.records, 2
            )
        report(result)
    finally:
        process.kill()
        process.wait(30)


def report(result: dict[str, Any]) -> None:
    print(
        f"\n{result['records']:,} records, TTL {result['ttl_s']:.0f} s: {result['insert_per_s']:,} records/s "
        f"({result['insert_s']} s), {result.get('bytes_per_record', '-')} bytes/record "
        f"({result['bytes_per_record_with_done_tokens']} with done tokens)"
    )
    if "queries" in result:
        print("| call | p50 (ms) | p99 (ms) | matched |\n|---|---|---|---|")
        for label, row in result["queries"].items():
            print(f"| {label} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['matched']:,} |")
    name = f"log-scale-{result['records']}-ttl{int(result['ttl_s'])}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path = ROOT / "bench" / "results" / name
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
