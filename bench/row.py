"""One row of one round: every phase of one system, from a clean queue and a clean Redis database.

1. warm the sender (connections, imports), then purge that warm-up message;
2. single send: N tasks, worker stopped; then wait until RabbitMQ holds all N (a send mode that returns
   before the confirm keeps publishing in the background), which also gives ``single_queued_rate``;
3. drain: start the worker on that backlog of N; the clock starts at the first completion seen (so the
   worker's boot time is excluded) and stops when the counter reaches N;
   rate = (N - count at first completion) / elapsed;
4. end to end: worker running, N single sends, first send to last completion;
5. latency: closed-loop sample, worker running (see bench.client);
6. stop the worker (SIGTERM, wait); its peak RSS was sampled from step 3 to here;
7. batch send (rows that have one): N tasks in batches, worker stopped; once all are queued
   (``batch_queued_rate``) the backlog is purged.
A failing phase ends the row for this round; the figures already measured are kept, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.client_process import ClientProcess
from bench.counter import wait_for_count
from bench.processes import ManagedProcess
from bench.rss import RssSampler
from bench.settings import done_key, latency_key
from bench.stats import rate
from bench.systems import System


@dataclass
class RowOptions:
    tasks: int
    latency_samples: int
    batch_size: int
    log_dir: Path

    def phase_timeout(self) -> float:
        """Generous: a phase that stalls fails on the counter's stall timeout long before this."""
        return 600.0 + self.tasks / 10


@dataclass
class RowRound:
    figures: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"figures": self.figures, "error": self.error}


def reset(system: System, admin: Any, client: Any) -> None:
    admin.purge(system.queues)
    client.delete(done_key(system.family), latency_key(system.family))


def queued_rate(admin: Any, system: System, options: RowOptions, started_wall: float) -> float | None:
    """Wait until the N sent messages are all in the queue (a sender may return before RabbitMQ has
    them); N / (first send to that moment), from wall clocks of the same machine."""
    queued_at = admin.wait_depth(system.queues, options.tasks, timeout=120 + options.tasks / 50)
    return rate(options.tasks, queued_at - started_wall)


def run_row(system: System, options: RowOptions, admin: Any, redis_client: Any, round_index: int) -> RowRound:
    result = RowRound()
    tag = f"{system.key}-round{round_index + 1}"
    sender = ClientProcess(
        system,
        tasks=options.tasks,
        latency_samples=options.latency_samples,
        batch_size=options.batch_size,
        log_path=options.log_dir / f"{tag}-sender.log",
    )
    worker = ManagedProcess(f"{system.key} worker", system.worker_argv, options.log_dir / f"{tag}-worker.log")
    sampler: RssSampler | None = None
    timeout = options.phase_timeout()
    try:
        redis_client.flushdb()
        reset(system, admin, redis_client)
        sender.start()
        sender.run("warmup", timeout)
        admin.wait_depth(system.queues, 1)
        reset(system, admin, redis_client)

        sent = sender.run("single", timeout)
        result.figures["single_rate"] = sent["single_rate"]
        result.figures["single_queued_rate"] = queued_rate(admin, system, options, sent["started_wall"])

        worker.start()
        sampler = RssSampler(worker.pid).start()
        done = wait_for_count(redis_client, done_key(system.family), options.tasks, check=worker.check)
        result.figures["drain_rate"] = rate(options.tasks - done.first_count, done.last_at - done.first_at)

        reset(system, admin, redis_client)
        result.figures.update(sender.run("e2e", timeout))
        reset(system, admin, redis_client)
        result.figures.update(sender.run("latency", timeout))

        worker.stop()
        result.figures.update(sampler.stop())
        sampler = None

        if system.has_batch:
            reset(system, admin, redis_client)
            sent = sender.run("batch", timeout)
            result.figures["batch_rate"] = sent["batch_rate"]
            result.figures["batch_queued_rate"] = queued_rate(admin, system, options, sent["started_wall"])
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if sampler is not None:
            sampler.stop()  # a worker that failed half-way: its memory is no figure
        worker.stop()
        for step, cleanup in (("closing the sender", sender.close), ("purging", lambda: admin.purge(system.queues))):
            try:
                cleanup()
            except Exception as exc:  # reported, and never hiding the error (or Ctrl-C) that got us here
                result.error = result.error or f"{step}: {type(exc).__name__}: {exc}"
    return result
