"""``cogman demo``: the whole system in one process, on the embedded memory broker and backend.

It says what it is about to show, sends low tasks first and high ones after, drains them with a worker
while a progress bar runs, then proves its claims from what the backend recorded: the start order of
high and low tasks (measured from each record's history), the deliberate failures and their retries,
and one retried task's full status history. It ends with the next step, the two-terminal walkthrough on
RabbitMQ. Output fits 80 columns; nothing outside the process is needed.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cogman.admin.actions import chain
from cogman.app import App
from cogman.backends.base import TaskQuery
from cogman.message import Message
from cogman.middleware.base import Middleware
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.status import Status
from cogman.task import TaskContext

WIDTH = 80


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


def build_app(counter: ChainCounter) -> App:
    app = App("demo", broker="memory://", backend="memory://", middleware=[counter])

    @app.task(name="demo.resize", priority="high")
    def resize(image: int, width: int) -> dict[str, int]:
        time.sleep(0.002 + (image % 7) * 0.001)
        return {"image": image, "width": width, "height": width * 3 // 4}

    @app.task(name="demo.report", priority="low")
    def report(day: int) -> str:
        time.sleep(0.002 + (day % 5) * 0.001)
        return f"report-{day}"

    @app.task(name="demo.flaky", priority="high", retry=2, bind=True)
    def flaky(ctx: TaskContext, order: int) -> str:
        if ctx.attempt < 3:
            raise ConnectionError(f"order {order}: payment service timed out (attempt {ctx.attempt})")
        return f"order {order} paid on attempt {ctx.attempt}"

    @app.task(name="demo.broken", priority="low", retry=1)
    def broken(row: int) -> None:
        raise ValueError(f"row {row}: column 'price' is not a number")

    return app


def run_demo(tasks: int = 400, concurrency: int = 8) -> int:
    console = Console(width=min(Console().width, WIDTH), highlight=False)
    logging.getLogger("cogman").setLevel(logging.CRITICAL)  # the failures are part of the show: see below
    counter = ChainCounter()
    app = build_app(counter)
    high = max(1, tasks // 2)
    low = max(1, tasks - high)
    flaky, broken = max(1, high // 20), max(1, low // 50)
    console.print(_intro(high, low, flaky, broken, concurrency))
    started = time.perf_counter()
    app.send_many("demo.report", [((day,), {}) for day in range(low - broken)])
    app.send_many("demo.broken", [((row,), {}) for row in range(broken)])
    app.send_many("demo.resize", [((i, 640), {}) for i in range(high - flaky)])
    first_flaky = app.send_many("demo.flaky", [((order,), {}) for order in range(flaky)])[0]
    chains = high + low
    worker = app.start_background(concurrency=concurrency)
    columns = (TextColumn("draining"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("tasks", total=chains)
        with counter.changed:
            while counter.finished < chains:
                counter.changed.wait(0.1)
                progress.update(bar, completed=counter.finished)
        progress.update(bar, completed=chains)
    elapsed = time.perf_counter() - started
    worker.stop()
    records = app.backend.query(TaskQuery(limit=10 * chains)).records
    console.print(_summary(records, elapsed))
    console.print(_priority_report(records))
    console.print(_history(chain(app.backend, first_flaky.id)))
    console.print(_next_step())
    app.close()
    return 0


def _intro(high: int, low: int, flaky: int, broken: int, concurrency: int) -> str:
    return (
        f"[bold]cogman demo[/]: {high + low} tasks, one worker of {concurrency} threads, all in this\n"
        "process on the embedded memory:// broker and backend. It shows:\n"
        f"  1. priorities: {low} low tasks are sent first, {high} high ones after;\n"
        "     the worker still starts the high ones first (measured below).\n"
        f"  2. retries: {flaky} demo.flaky task(s) fail their first two attempts and\n"
        f"     succeed on the third; {broken} demo.broken task(s) always fail. These\n"
        "     failures are deliberate: summarised below, not logged.\n"
        "  3. one retried task's full status history, attempt by attempt.\n"
    )


def _summary(records: list[TaskRecord], elapsed: float) -> Table:
    finals: dict[str, TaskRecord] = {}
    for record in records:
        latest = finals.get(record.original_task_id)
        if latest is None or record.attempt > latest.attempt:
            finals[record.original_task_id] = record
    table = Table(title="what the backend recorded", show_header=False)
    table.add_row("tasks (retry chains)", str(len(finals)))
    table.add_row("attempts", f"{len(records)} ({sum(1 for r in records if r.attempt > 1)} of them retries)")
    for name in ("demo.resize", "demo.report", "demo.flaky", "demo.broken"):
        mine = [r for r in finals.values() if r.name == name]
        succeeded = sum(1 for r in mine if r.status is Status.SUCCESS)
        most = max((r.attempt for r in mine), default=0)
        table.add_row(f"  {name}", f"{succeeded} succeeded, {len(mine) - succeeded} failed, up to {most} attempt(s)")
    durations = sorted(r.duration for r in records if r.duration is not None)
    if len(durations) > 1:
        q = statistics.quantiles(durations, n=100)
        table.add_row("handler time p50 / p99", f"{q[49] * 1000:.1f} / {q[98] * 1000:.1f} ms")
    table.add_row("wall time", f"{elapsed:.2f} s, {len(finals) / elapsed:.0f} tasks/s")
    return table


def started_at(record: TaskRecord) -> float:
    """When the attempt reached in_progress (its creation time if it never did), as a timestamp."""
    moments = [moment for status, moment in record.history if status is Status.IN_PROGRESS]
    return (moments[0] if moments else record.created_at).timestamp()


def start_positions(records: list[TaskRecord]) -> dict[Priority, list[int]]:
    """The start rank (1 = started first) of every first attempt, by priority."""
    firsts = sorted((r for r in records if r.attempt == 1), key=started_at)
    positions: dict[Priority, list[int]] = {priority: [] for priority in Priority}
    for rank, record in enumerate(firsts, start=1):
        positions[record.priority].append(rank)
    return positions


def _priority_report(records: list[TaskRecord]) -> str:
    positions = start_positions(records)
    highs, lows = positions[Priority.HIGH], positions[Priority.LOW]
    last_high = max(highs, default=0)
    lows_before = sum(1 for rank in lows if rank < last_high)
    return (
        "\n[bold]priorities, measured[/] (start order of first attempts, from their history):\n"
        f"  median start position: high {statistics.median(highs):.0f}, "
        f"low {statistics.median(lows):.0f} (of {len(highs) + len(lows)})\n"
        f"  lows started before the last high: {lows_before} of {len(lows)}, "
        "though every low was sent first\n"
    )


def _history(attempts: list[TaskRecord]) -> str:
    """Each attempt's statuses with their time since the task was sent (a retry attempt is recorded
    while the attempt before it is still being failed: the retry is spawned first, so none is lost)."""
    first = attempts[0]
    lines = [f"[bold]one task's history[/]: {escape(first.name)}\\[{first.task_id}]"]
    for attempt in attempts:
        lines.append(f"  attempt {attempt.attempt} ({attempt.task_id[:8]})")
        for status, moment in attempt.history:
            offset = f"+{(moment - first.created_at).total_seconds() * 1000:.2f}"
            note = f"{attempt.fail_error}" if status is Status.FAILED and attempt.fail_error else ""
            note = f"-> {attempt.result!r}" if status is Status.SUCCESS else note
            lines.append(escape(_fit(f"    {offset:>9} ms  {status.value:<11}  {note}".rstrip())))
    return "\n".join(lines) + "\n"


def _next_step() -> str:
    return (
        "[bold]next[/]: the same over RabbitMQ and Redis, client and worker in two\n"
        "terminals: examples/README.md in the cogman repository. In short:\n"
        "  terminal 1: cogman -A examples.distributed worker -l INFO\n"
        "  terminal 2: python -m examples.distributed"
    )


def _fit(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 3] + "..."
