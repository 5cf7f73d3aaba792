"""bench/log_scale.py on a Redis Cluster: N records through the sharded log, bytes per record, query latency.

Starts the tests' six-node cluster (tests/cluster/redis_cluster_nodes.py: three primaries, three
replicas, 127.0.0.1, no persistence), writes N records as bench/log_scale.py does (same mix, same
batches, ``redis_shards`` 16 by default), then times the calls of ``/list`` and ``/daterangecount``:

    python bench/log_scale_cluster.py --records 1000000

Memory is the primaries' used_memory summed (each replica holds a copy), done tokens included (they
expire 5 minutes after each record's last write; bench/log_scale.py waits for them, this does not).
Results: a table, and JSON in bench/results/log-scale-cluster-*.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.log_scale import BOUND_PER_RECORD, HEADROOM, PREFIX, arguments, insert, latencies, per_record  # noqa: E402
from bench.log_scale_server import available  # noqa: E402
from cogman import Config  # noqa: E402
from cogman.backends.redis.backend import RedisBackend  # noqa: E402
from cogman.record import utcnow  # noqa: E402
from tests.cluster.redis_cluster_nodes import RedisClusterNodes, redis_cluster  # noqa: E402


def primaries_memory(nodes: RedisClusterNodes) -> int:
    total = 0
    for server in nodes.servers:
        with redis.Redis(port=server.port, socket_timeout=60) as client:
            if client.info("replication")["role"] == "master":
                total += int(client.info("memory")["used_memory"])
    return total


def main() -> None:
    parser = arguments(__doc__, 1_000_000)
    args = parser.parse_args()
    if args.records <= 0 or args.writers <= 0 or args.calls <= 0 or args.spread_days * 86400 >= args.ttl:
        parser.error("--records, --writers and --calls must be positive, --spread-days inside --ttl")
    if 2 * args.records * BOUND_PER_RECORD > available() - HEADROOM:  # primaries and replicas
        parser.error(f"--records {args.records:,} needs up to {2 * args.records * BOUND_PER_RECORD / 1e9:.1f} GB")
    with redis_cluster() as nodes:
        before = primaries_memory(nodes)
        seconds = insert(nodes.url, args.ttl, args.records, args.writers, args.spread_days * 86400)
        after = primaries_memory(nodes)
        config = Config(broker_url="memory://", backend_url=nodes.url, redis_ttl=args.ttl, redis_prefix=PREFIX)
        backend = RedisBackend(nodes.url, config)
        result: dict[str, Any] = {
            "records": args.records,
            "shards": backend.shards.count,
            "ttl_s": args.ttl,
            "writers": args.writers,
            "insert_s": round(seconds, 1),
            "insert_per_s": round(args.records / seconds),
            "bytes_per_record_with_done_tokens": round(per_record(before, after, args.records)),
            "when": utcnow().isoformat(timespec="seconds"),
        }
        print(json.dumps(result), flush=True)
        result["queries"] = latencies(backend, args.calls)
        backend.close()
    print(
        f"\n{args.records:,} records on a Redis Cluster ({result['shards']} shards): {result['insert_per_s']:,} "
        f"records/s ({result['insert_s']} s), {result['bytes_per_record_with_done_tokens']} bytes/record with "
        "done tokens\n| call | p50 (ms) | p99 (ms) | matched |\n|---|---|---|---|"
    )
    for label, row in result["queries"].items():
        print(f"| {label} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['matched']:,} |")
    path = ROOT / "bench" / "results" / f"log-scale-cluster-{args.records}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
