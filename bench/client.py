"""The sending side of one row, in its own process: ``python -m bench.client --system KEY``.

One process per row and round keeps the systems' client state apart (Celery's result subscriptions,
Dramatiq's global broker, cogman's outbox) and keeps the harness's own threads (memory sampling,
polling) off the sender's GIL. The harness drives it with one JSON command a line on stdin and reads
one JSON reply a line; everything else the libraries print goes to stderr (the client log).

Phases (the worker's state is the harness's business):
- ``warmup``: one send, so connections and first-use costs are paid before any clock starts;
- ``single``: N sends, one at a time, from this one thread; the clock stops when the last send returns;
- ``batch``: N tasks in batches of ``--batch-size``;
- ``e2e``: N single sends, then wait for the counter to reach N: first send to last completion;
- ``latency``: closed loop of M sends carrying the wall-clock send time, each sent only after the
  previous one completed (and a 1 ms pause), so no task waits behind another; the task body records
  its start time minus the send time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any

import redis

from bench.counter import wait_for_count
from bench.senders import Sender, open_sender
from bench.settings import BATCH_SIZE, REDIS_URL, done_key, latency_key
from bench.stats import percentile, rate

#: Pause after each latency sample completed, so the worker is idle when the next one arrives.
LATENCY_GAP = 0.001
#: Counter poll interval of the latency loop: it only paces the loop, the latency is measured by the task.
LATENCY_POLL = 0.0005


PHASES = ("warmup", "single", "batch", "e2e", "latency")


class Phases:
    def __init__(self, sender: Sender, family: str, tasks: int, latency_samples: int, batch_size: int) -> None:
        self.sender = sender
        self.family = family
        self.tasks = tasks
        self.latency_samples = latency_samples
        self.batch_size = batch_size
        self.redis = redis.Redis.from_url(REDIS_URL)

    def warmup(self) -> dict[str, Any]:
        self.sender.send(0.0)
        return {}

    def single(self) -> dict[str, Any]:
        send = self.sender.send
        started_wall, started = time.time(), time.perf_counter()
        for _ in range(self.tasks):
            send(0.0)
        return {"single_rate": rate(self.tasks, time.perf_counter() - started), "started_wall": started_wall}

    def batch(self) -> dict[str, Any]:
        started_wall, started = time.time(), time.perf_counter()
        for offset in range(0, self.tasks, self.batch_size):
            self.sender.send_batch(min(self.batch_size, self.tasks - offset))
        return {"batch_rate": rate(self.tasks, time.perf_counter() - started), "started_wall": started_wall}

    def e2e(self) -> dict[str, Any]:
        send = self.sender.send
        started = time.perf_counter()
        for _ in range(self.tasks):
            send(0.0)
        sent = time.perf_counter()
        done = wait_for_count(self.redis, done_key(self.family), self.tasks)
        return {"e2e_rate": rate(self.tasks, done.last_at - started), "e2e_send_rate": rate(self.tasks, sent - started)}

    def latency(self) -> dict[str, Any]:
        key = done_key(self.family)
        for sample in range(1, self.latency_samples + 1):
            self.sender.send(time.time())
            wait_for_count(self.redis, key, sample, poll=LATENCY_POLL)
            time.sleep(LATENCY_GAP)
        seconds = [float(v) for v in self.redis.lrange(latency_key(self.family), 0, -1)]
        if not seconds:
            raise RuntimeError("no latency recorded by the tasks")
        millis = [s * 1000 for s in seconds]
        return {
            "latency_p50_ms": percentile(millis, 50),
            "latency_p99_ms": percentile(millis, 99),
            "latency_samples": len(millis),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", required=True)
    parser.add_argument("--family", required=True)
    parser.add_argument("--send-mode")
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--latency-samples", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    args = parser.parse_args()
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # a library's print must not corrupt the protocol

    def reply(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")

    try:
        sender = open_sender(args.system, args.send_mode)
    except BaseException as exc:
        traceback.print_exc()
        reply({"error": f"could not open the sender: {type(exc).__name__}: {exc}"})
        sys.exit(1)
    phases = Phases(sender, args.family, args.tasks, args.latency_samples, args.batch_size)
    reply({"ready": True})
    try:
        for line in sys.stdin:
            phase = json.loads(line)["phase"]
            if phase == "quit":
                break
            try:
                if phase not in PHASES:
                    raise ValueError(f"unknown phase {phase!r}")
                reply(getattr(phases, phase)())
            except Exception as exc:
                traceback.print_exc()
                reply({"error": f"{phase}: {type(exc).__name__}: {exc}"})
    finally:
        sender.close()
    reply({"closed": True})


if __name__ == "__main__":
    main()
