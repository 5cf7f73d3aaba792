"""One sending thread's cost: N ``.delay()`` calls, no worker, on the benchmark's vhost and Redis database.

For back-to-back comparisons of a change to the send path, where ``nox -s bench``'s rounds spread too
wide (its single-send figure moved 1,400-3,044/s between rounds of one run). Run it alternately in two
checkouts, several times each, and compare the medians:

    python bench/send_loop.py --tasks 10000 --runs 6

Each run purges the queue and the Redis database first, sends 300 tasks to warm up (connections,
declares, script loads), then times N sends. It prints the rate and the sending thread's CPU per send
(``time.thread_time``: what the flusher thread and the servers use is not in it), then the whole
process's CPU per send from the first timed send to the end of ``close()`` (its other threads too: the
flusher, and with ``--lean`` the background sender that records and publishes what ``.delay()`` handed
over).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cogman_tasks import TASK_NAME, make_app  # noqa: E402
from bench.profile import QUEUES  # noqa: E402
from bench.rabbit import Admin, ensure_vhost  # noqa: E402
from bench.settings import AMQP_URL, REDIS_URL  # noqa: E402

WARM_UP = 300


def one_run(tasks: int, lean: bool = False) -> tuple[float, float, float]:
    """(sends a second, sending-thread CPU microseconds a send, process CPU microseconds a send)."""
    admin = Admin(AMQP_URL)
    try:
        admin.purge(QUEUES)
    finally:
        admin.close()
    redis.Redis.from_url(REDIS_URL).flushdb()
    app = make_app(profile="lean") if lean else make_app()
    try:
        for _ in range(WARM_UP):
            app.send_task(TASK_NAME, args=(0.0,))
        wall, cpu, process = time.perf_counter(), time.thread_time(), time.process_time()
        for _ in range(tasks):
            app.send_task(TASK_NAME, args=(time.time(),))
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    finally:
        app.close()
    process = time.process_time() - process
    return tasks / wall, cpu / tasks * 1e6, process / tasks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lean", action="store_true", help='App(profile="lean"): .delay() hands over and returns')
    args = parser.parse_args()
    ensure_vhost(AMQP_URL)
    rates, cpus, processes = [], [], []
    for index in range(args.runs):
        rate, cpu, process = one_run(args.tasks, args.lean)
        rates.append(rate)
        cpus.append(cpu)
        processes.append(process)
        print(
            f"send_loop: run {index + 1}: {rate:,.0f} sends/s, {cpu:.0f} us of the sending thread's CPU a send, "
            f"{process:.0f} us of the process's"
        )
    print(
        f"send_loop: median of {args.runs}: {statistics.median(rates):,.0f} sends/s, "
        f"{statistics.median(cpus):.0f} us of the thread's CPU a send, {statistics.median(processes):.0f} us of the "
        "process's"
    )


if __name__ == "__main__":
    main()
