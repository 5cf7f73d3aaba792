"""``cogman demo``: the whole system in one process, on the embedded memory broker and backend.

It sends tasks of both priorities, some of which fail and are retried, drains them with a worker while a
progress bar runs, and prints what the backend recorded. Nothing outside the process is needed.
"""

from __future__ import annotations

import logging
import random
import statistics
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cogman.app import App
from cogman.backends.base import TaskQuery
from cogman.message import Message
from cogman.middleware import Middleware
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.status import Status


class ChainCounter(Middleware):
    """Counts finished retry chains: a success, or a failure with no retry left."""

    def __init__(self) -> None:
        self.finished = 0
        self.changed = threading.Condition()

    def after_execute(self, message: Message, *, result: Any = None, exception: BaseException | None = None) -> None:
        if exception is None or message.retries_left == 0:
            with self.changed:
                self.finished += 1
                self.changed.notify_all()


def build_app(counter: ChainCounter, seed: int) -> App:
    app = App("demo", broker="memory://", backend="memory://", middleware=[counter])
    rng = random.Random(seed)
    lock = threading.Lock()

    def chance() -> float:
        with lock:
            return rng.random()

    @app.task(name="demo.resize", priority="high", retry=2)
    def resize(image: int, width: int) -> dict[str, int]:
        time.sleep(0.005 + chance() * 0.02)
        if chance() < 0.2:
            raise OSError(f"image {image}: storage timed out")
        return {"image": image, "width": width, "height": width * 3 // 4}

    @app.task(name="demo.report", priority="low", retry=1)
    def report(day: int) -> str:
        time.sleep(0.01 + chance() * 0.03)
        if day % 25 == 0:
            raise ValueError(f"day {day}: no data")
        return f"report-{day}"

    return app


def run_demo(tasks: int = 400, concurrency: int = 8, seed: int = 7) -> int:
    console = Console()
    logging.getLogger("cogman").setLevel(logging.CRITICAL)  # failures are part of the show: summarised below
    counter = ChainCounter()
    app = build_app(counter, seed)
    high, low = tasks * 3 // 4, tasks - tasks * 3 // 4
    console.print(
        f"[bold]cogman demo[/]: {high} high + {low} low tasks, memory:// broker and backend, "
        f"{concurrency} worker threads"
    )
    started = time.perf_counter()
    app.send_many("demo.resize", [((i, 640), {}) for i in range(high)])
    app.send_many("demo.report", [((day,), {}) for day in range(low)])
    sent = time.perf_counter() - started
    worker = app.start_background(concurrency=concurrency)
    columns = (TextColumn("draining"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("tasks", total=tasks)
        with counter.changed:
            while counter.finished < tasks:
                counter.changed.wait(0.1)
                progress.update(bar, completed=counter.finished)
        progress.update(bar, completed=tasks)
    elapsed = time.perf_counter() - started
    worker.stop()
    records = app.backend.query(TaskQuery(limit=10 * tasks)).records
    console.print(_summary(records, tasks, sent, elapsed))
    app.close()
    return 0


def _summary(records: list[TaskRecord], tasks: int, sent: float, elapsed: float) -> Table:
    by_status = {status: sum(1 for r in records if r.status is status) for status in Status}
    chains = {r.original_task_id for r in records}
    finals: dict[str, TaskRecord] = {}
    for record in records:
        latest = finals.get(record.original_task_id)
        if latest is None or record.attempt > latest.attempt:
            finals[record.original_task_id] = record
    durations = sorted(r.duration for r in records if r.duration is not None)
    table = Table(title="cogman demo summary", show_header=False)
    table.add_row("tasks sent", f"{len(chains)} in {sent * 1000:.0f} ms")
    table.add_row("attempts recorded", str(len(records)))
    for status in Status:
        if by_status[status]:
            table.add_row(f"  attempts {status.value}", str(by_status[status]))
    table.add_row("retries", str(sum(1 for r in records if r.attempt > 1)))
    succeeded = sum(1 for r in finals.values() if r.status is Status.SUCCESS)
    table.add_row("tasks succeeded / failed", f"{succeeded} / {len(finals) - succeeded}")
    for priority in Priority:
        done = sum(1 for r in finals.values() if r.priority is priority and r.status is Status.SUCCESS)
        table.add_row(f"  {priority.value} succeeded", str(done))
    if durations:
        q = statistics.quantiles(durations, n=100) if len(durations) > 1 else [durations[0]] * 99
        table.add_row(
            "handler duration p50 / p90 / p99", f"{q[49] * 1000:.1f} / {q[89] * 1000:.1f} / {q[98] * 1000:.1f} ms"
        )
    table.add_row("wall time, throughput", f"{elapsed:.2f} s, {tasks / elapsed:.0f} tasks/s")
    return table
