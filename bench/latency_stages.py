"""Where cogman's send->start time goes, step by step: ``python bench/latency_stages.py``.

The benchmark's latency phase (bench/client.py) in one process, with stamps taken inside cogman at each
step (bench/stages.py): a closed loop of M ``.delay()`` calls to an idle worker, each sent once the
previous one ran (and 1 ms later), on the benchmark's vhost and Redis database. The worker has the
benchmark's shape unless told otherwise (``--processes 2 -c 8``). Then the same loop with raw kombu
(bench/kombu_worker.py, one process, no confirms) as the reference the ``p50 <= 1.5x`` target uses.

Prints a Markdown table: each stage's p50/p90 since the call, and the p50 step from the stage before.
The stamps cost a few microseconds each; the figures are a breakdown, not the benchmark's p50.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.client import LATENCY_GAP, LATENCY_POLL  # noqa: E402
from bench.counter import wait_for_count  # noqa: E402
from bench.processes import ManagedProcess, stop_all  # noqa: E402
from bench.profile import QUEUES as COGMAN_QUEUES  # noqa: E402
from bench.rabbit import Admin, ensure_vhost  # noqa: E402
from bench.settings import AMQP_URL, REDIS_URL, done_key, latency_key  # noqa: E402
from bench.stages import STAMPS_KEY, Stamps, instrument_client, stage_offsets, table  # noqa: E402

KOMBU_QUEUE = "bench_stages_kombu"
LOGS = ROOT / "bench" / "results" / "logs"


def cogman_loop(
    client: redis.Redis, samples: int, processes: int, concurrency: int, send_mode: str | None
) -> dict[str, list[float]]:
    from bench.cogman_tasks import TASK_NAME, make_app

    family = "cogman"
    client.delete(done_key(family), latency_key(family), STAMPS_KEY)
    stamps = Stamps()
    instrument_client(stamps)
    argv = ["-m", "cogman", "-A", "bench.stages_app:app", "--log-level", "WARNING", "worker"]
    worker = ManagedProcess(
        "worker", [*argv, "--processes", str(processes), "-c", str(concurrency)], LOGS / "stages-worker.log"
    )
    worker.start()
    app = make_app(**({} if send_mode is None else {"send_mode": send_mode}))
    try:
        task = app.tasks[TASK_NAME]
        for warm in range(1, 2 * processes + 1):  # every worker process runs at least one before the clock
            task.delay(0.0)
            wait_for_count(client, done_key(family), warm, check=worker.check)
        client.delete(latency_key(family))
        sent_at: dict[str, float] = {}
        for sample in range(1, samples + 1):
            at = time.time()
            sent_at[task.delay(at).id] = at
            wait_for_count(client, done_key(family), 2 * processes + sample, poll=LATENCY_POLL, check=worker.check)
            time.sleep(LATENCY_GAP)
    finally:
        app.close()
        worker.stop()
    rows = [json.loads(raw) for raw in client.lrange(STAMPS_KEY, 0, -1)] + stamps.rows
    body = [float(v) for v in client.lrange(latency_key(family), 0, -1)]
    return stage_offsets(sent_at, rows, body)


def kombu_loop(client: redis.Redis, samples: int) -> list[float]:
    from bench.kombu_sender import KombuSender

    family = "kombu-stages"
    client.delete(done_key(family), latency_key(family))
    sender = KombuSender(KOMBU_QUEUE, confirms=False)
    argv = ["-m", "bench.kombu_worker", "--queue", KOMBU_QUEUE, "--family", family]
    worker = ManagedProcess("kombu worker", argv, LOGS / "stages-kombu-worker.log").start()
    try:
        sender.send(0.0)
        wait_for_count(client, done_key(family), 1, check=worker.check)
        client.delete(latency_key(family))
        for sample in range(2, samples + 2):
            sender.send(time.time())
            wait_for_count(client, done_key(family), sample, poll=LATENCY_POLL, check=worker.check)
            time.sleep(LATENCY_GAP)
    finally:
        sender.close()
        worker.stop()
    return [float(v) * 1000 for v in client.lrange(latency_key(family), 0, -1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--send-mode", help="the client's Config.send_mode (default: cogman's default)")
    parser.add_argument("--no-kombu", action="store_true", help="skip the raw kombu reference")
    args = parser.parse_args()
    ensure_vhost(AMQP_URL)
    admin = Admin(AMQP_URL)
    try:
        admin.purge(COGMAN_QUEUES)
    finally:
        admin.close()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        offsets = cogman_loop(client, args.samples, args.processes, args.concurrency, args.send_mode)
        reference = None if args.no_kombu else kombu_loop(client, args.samples)
    finally:
        stop_all()
        client.close()
    shape = f"--processes {args.processes} -c {args.concurrency}"
    mode = args.send_mode or "default"
    print(f"\nsend->start by stage, {args.samples:,} closed-loop samples, send_mode {mode}, worker {shape}:\n")
    print(table(offsets, reference))


if __name__ == "__main__":
    main()
