"""``python bench/run.py [--quick]``: every system, interleaved round by round, then the report.

The harness owns the workers and the senders (child processes, see bench.processes); whatever
happens (a system that fails, an exception, Ctrl-C or SIGTERM) none is left running when it exits,
the benchmark's queues are deleted and Redis database 14 is emptied. A system that fails is reported
as failed, with the reason, and the others carry on.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import os
import platform
import shlex
import signal
import sys
import time
from contextlib import AbstractContextManager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from bench import settings
from bench.output import RESULTS, write
from bench.processes import stop_all
from bench.rabbit import Admin, ensure_vhost
from bench.report import RowSummary, summarize
from bench.row import RowOptions, RowRound, run_row
from bench.systems import System, all_systems


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: N=1,000, one round, 200 latency samples")
    parser.add_argument("--tasks", type=int, help=f"N, tasks a phase (default {settings.TASKS:,})")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {settings.ROUNDS})")
    parser.add_argument("--latency-samples", type=int, help=f"default {settings.LATENCY_SAMPLES:,}")
    parser.add_argument("--batch-size", type=int, default=settings.BATCH_SIZE)
    parser.add_argument(
        "--only", action="append", metavar="KEY", help="run only rows whose key starts with KEY (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory (default bench/results)")
    args = parser.parse_args(argv)
    args.tasks = args.tasks or (settings.QUICK_TASKS if args.quick else settings.TASKS)
    args.rounds = args.rounds or (settings.QUICK_ROUNDS if args.quick else settings.ROUNDS)
    samples = settings.QUICK_LATENCY_SAMPLES if args.quick else settings.LATENCY_SAMPLES
    args.latency_samples = args.latency_samples or samples
    return args


def versions(admin: Admin, client: redis.Redis) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("cogman", "kombu", "amqp", "redis", "hiredis", "celery", "dramatiq", "pika"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["RabbitMQ"] = admin.server_version()
    found["Redis server"] = str(client.info("server").get("redis_version", "?"))
    return found


def load() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    atexit.register(stop_all)  # the last resort, should anything escape the try/finally below
    import cogman

    systems = all_systems(cogman.Config)
    if args.only:
        systems = [s for s in systems if any(s.key.startswith(prefix) for prefix in args.only)]
    ensure_vhost(settings.AMQP_URL)
    admin = Admin(settings.AMQP_URL)
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.ping()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    options = RowOptions(args.tasks, args.latency_samples, args.batch_size, args.out / "logs" / stamp)
    command = "python bench/run.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    meta: dict[str, Any] = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "quick": args.quick,
        "tasks": args.tasks,
        "rounds": args.rounds,
        "rounds_done": 0,
        "latency_samples": args.latency_samples,
        "batch_size": args.batch_size,
        "cpus": os.cpu_count(),
        "load_start": load(),
        "versions": versions(admin, client),
        "send_modes": [s.send_mode for s in systems if s.key.startswith("cogman")],
        "workers": {s.key: s.worker_command() for s in systems},
        "logs": str(options.log_dir),
    }
    outcomes: dict[str, list[RowRound]] = {s.key: [] for s in systems}
    all_queues = [queue for s in systems for queue in s.queues]
    interrupted = False
    try:
        admin.delete(all_queues)
        for round_index in range(args.rounds):
            shift = round_index % len(systems)
            for system in systems[shift:] + systems[:shift]:
                _run_one(system, options, admin, client, round_index, args.rounds, outcomes)
            meta["rounds_done"] = round_index + 1
    except KeyboardInterrupt:
        interrupted = True
        print("bench: interrupted; stopping workers and writing what was measured", file=sys.stderr)
    finally:
        stop_all()
        try:
            admin.delete(all_queues)
            client.flushdb()
            admin.close()
        except Exception as exc:  # the results still get written
            print(f"bench: cleaning up the queues and Redis failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    meta.update(interrupted=interrupted, load_end=load(), finished=datetime.now().isoformat(timespec="seconds"))
    rows = [_summary(s, outcomes[s.key]) for s in systems]
    paths = write(meta, rows, stamp, args.out)
    print((args.out / "latest.md").read_text())
    print("bench: wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 130 if interrupted else 0


def services_lock() -> AbstractContextManager[None]:
    """Hold the test suites' service lock shared for one row, so no disruptive test (one that restarts
    RabbitMQ or Redis, tests/service_lock.py) runs in the middle of a measurement on a shared machine."""
    try:
        from tests.service_lock import services
    except ImportError:  # not run from a checkout with the test suite
        return contextlib.nullcontext()
    return services(exclusive=False)


def _run_one(
    system: System,
    options: RowOptions,
    admin: Admin,
    client: redis.Redis,
    round_index: int,
    rounds: int,
    outcomes: dict[str, list[RowRound]],
) -> None:
    print(f"bench: round {round_index + 1}/{rounds}: {system.key} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    with services_lock():
        outcome = run_row(system, options, admin, client, round_index)
    outcomes[system.key].append(outcome)
    shown = {k: round(v, 2) for k, v in outcome.figures.items() if isinstance(v, float)}
    note = f" FAILED: {outcome.error}" if outcome.error else ""
    print(f"bench:   {time.monotonic() - started:.0f} s {shown}{note}", file=sys.stderr, flush=True)


def _summary(system: System, outcomes: list[RowRound]) -> RowSummary:
    rounds = [dataclasses.asdict(outcome) for outcome in outcomes]
    return summarize(system.key, system.label, system.role, system.has_batch, rounds)
