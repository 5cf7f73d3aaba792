"""CPU a task costs the whole machine, by process, against what a rate target leaves on it.

On a machine whose cores are all busy, no design reaches ``cores / CPU a task`` tasks a second. This tool
measures that CPU for each system of ``nox -s bench`` in two of its phases, on the same RabbitMQ and
Redis, so a rate target can be checked against arithmetic instead of hope:

- ``single``: N single sends from one thread, worker stopped (what the single-send rate pays);
- ``batch``: N tasks in batches of 500, worker stopped (``send_many``; rows that have a batch send);
- ``e2e``: N single sends with the worker running, until the last completes (what end to end pays).

For each, it reads the CPU time (user + system) of the sender process, the worker's process tree,
``redis-server`` and RabbitMQ's ``beam.smp`` before and after the phase, and the whole machine's busy
time (everything but idle and iowait), and prints microseconds a task:

    python bench/cpu_budget.py --tasks 20000 --rounds 3 --only kombu-confirm --only cogman-recorded --only dramatiq

``cores in use`` (busy CPU a task x rate) says how close to saturation the phase ran. ``CPU limit`` is
the rate no change of scheduling can pass while each task costs what it cost here: the lower of
``cores / machine busy`` and ``1 / sender`` (a Python sender is one process under one GIL). It is an
estimate, not a law: a design that batches more under load pays less a task there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import settings  # noqa: E402

if TYPE_CHECKING:
    import psutil

    from bench.rabbit import Admin
    from bench.systems import System

PHASES = ("single", "batch", "e2e")
#: Processes of the servers, by the name ``psutil`` reports.
SERVERS = {"redis": "redis-server", "rabbitmq": "beam.smp"}


def process_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def tree_seconds(pid: int) -> float:
    """CPU of a process and its children (a worker's forked processes), those gone already excepted."""
    import psutil  # the bench session's, not a cogman dependency: imported where measured

    root = psutil.Process(pid)
    total = process_seconds(root)
    for child in root.children(recursive=True):
        try:
            total += process_seconds(child)
        except psutil.NoSuchProcess:
            continue
    return total


def busy_seconds() -> float:
    """The machine's CPU time not idle, all cores together."""
    import psutil

    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def server_pids() -> dict[str, int]:
    import psutil

    found: dict[str, int] = {}
    for process in psutil.process_iter(["name"]):
        for label, name in SERVERS.items():
            if process.info["name"] == name:
                found[label] = process.pid
    missing = set(SERVERS) - set(found)
    if missing:
        raise RuntimeError(f"no process found for {', '.join(sorted(missing))} on this machine")
    return found


def snapshot(sender_pid: int, worker_pid: int | None, servers: Mapping[str, int]) -> dict[str, float]:
    import psutil

    taken = {"sender": tree_seconds(sender_pid), "machine": busy_seconds()}
    if worker_pid is not None:
        taken["worker"] = tree_seconds(worker_pid)
    for label, pid in servers.items():
        taken[label] = process_seconds(psutil.Process(pid))
    return taken


def per_task(before: Mapping[str, float], after: Mapping[str, float], tasks: int) -> dict[str, float]:
    """Microseconds of CPU a task for each part measured in both snapshots."""
    return {part: (after[part] - before[part]) / tasks * 1e6 for part in before if part in after}


def one_round(system: System, tasks: int, admin: Admin, client: Any, logs: Path) -> dict[str, dict[str, float]]:
    """CPU a task of each phase, and the phase's rate (``rate``, tasks a second), for one system."""
    from bench.client_process import ClientProcess
    from bench.counter import wait_for_count
    from bench.processes import ManagedProcess
    from bench.row import reset

    servers = server_pids()
    sender = ClientProcess(
        system, tasks=tasks, latency_samples=1, batch_size=settings.BATCH_SIZE, log_path=logs / f"{system.key}-s.log"
    )
    worker = ManagedProcess(f"{system.key} worker", system.worker_argv, logs / f"{system.key}-w.log")
    measured: dict[str, dict[str, float]] = {}
    try:
        client.flushdb()
        reset(system, admin, client)
        sender.start()
        sender.run("warmup", 600)
        worker.start()
        wait_for_count(client, settings.done_key(system.family), 1, check=worker.check)  # the worker is up

        reset(system, admin, client)
        before = snapshot(sender.process.pid, worker.pid, servers)
        figures = sender.run("e2e", 600)
        measured["e2e"] = {**per_task(before, snapshot(sender.process.pid, worker.pid, servers), tasks),
                           "rate": figures["e2e_rate"]}  # fmt: skip
        worker.stop()

        reset(system, admin, client)
        before = snapshot(sender.process.pid, None, servers)
        figures = sender.run("single", 600)
        admin.wait_depth(system.queues, tasks, timeout=120 + tasks / 50)  # a send that returns early pays later
        measured["single"] = {**per_task(before, snapshot(sender.process.pid, None, servers), tasks),
                              "rate": figures["single_rate"]}  # fmt: skip
        if system.has_batch:
            reset(system, admin, client)
            before = snapshot(sender.process.pid, None, servers)
            figures = sender.run("batch", 600)
            admin.wait_depth(system.queues, tasks, timeout=120 + tasks / 50)
            measured["batch"] = {**per_task(before, snapshot(sender.process.pid, None, servers), tasks),
                                 "rate": figures["batch_rate"]}  # fmt: skip
    finally:
        worker.stop()
        sender.close()
        admin.purge(system.queues)
    return measured


def medians(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        phase: {part: statistics.median(r[phase][part] for r in rounds) for part in rounds[0][phase]}
        for phase in PHASES
        if phase in rounds[0]
    }


def cpu_limit(figures: Mapping[str, float], cores: int) -> float:
    """Tasks a second the measured CPU a task allows: all cores busy, or the sender's one GIL busy."""
    return min(cores * 1e6 / figures["machine"], 1e6 / figures["sender"])


def rows(results: Mapping[str, dict[str, dict[str, float]]], cores: int) -> Iterator[str]:
    yield (
        "| system | phase | rate | sender | worker | redis-server | RabbitMQ | machine busy | cores in use | "
        "CPU limit |"
    )
    yield "|---|---|---|---|---|---|---|---|---|---|"
    for key, phases in results.items():
        for phase, f in phases.items():
            worker = f"{f['worker']:.0f} us" if "worker" in f else "-"
            yield (
                f"| {key} | {phase} | {f['rate']:,.0f}/s | {f['sender']:.0f} us | {worker} | {f['redis']:.0f} us | "
                f"{f['rabbitmq']:.0f} us | {f['machine']:.0f} us | {f['machine'] * f['rate'] / 1e6:.2f} of {cores} | "
                f"{cpu_limit(f, cores):,.0f}/s |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", metavar="KEY", help="rows whose key starts with KEY")
    args = parser.parse_args()
    import psutil
    import redis

    import cogman
    from bench.processes import stop_all
    from bench.rabbit import Admin, ensure_vhost
    from bench.systems import all_systems

    systems = [s for s in all_systems(cogman.Config) if not args.only or any(s.key.startswith(o) for o in args.only)]
    ensure_vhost(settings.AMQP_URL)
    admin, client = Admin(settings.AMQP_URL), redis.Redis.from_url(settings.REDIS_URL)
    rounds: dict[str, list[dict[str, dict[str, float]]]] = {s.key: [] for s in systems}
    try:
        with tempfile.TemporaryDirectory(prefix="cpu-budget-") as logs:
            for index in range(args.rounds):
                for system in systems[index % len(systems) :] + systems[: index % len(systems)]:
                    print(f"cpu_budget: round {index + 1}/{args.rounds}: {system.key}", file=sys.stderr, flush=True)
                    rounds[system.key].append(one_round(system, args.tasks, admin, client, Path(logs)))
    finally:
        stop_all()
        admin.close()
    print(f"CPU a task (user + system), median of {args.rounds} round(s), N = {args.tasks:,}:\n")
    print("\n".join(rows({key: medians(r) for key, r in rounds.items()}, psutil.cpu_count() or 1)))


if __name__ == "__main__":
    main()
