"""What ``cogman worker`` prints on stdout whatever the log level: Celery's habits.

The start banner comes before anything connects: a worker pointed at the wrong broker, consuming the
wrong family or missing a task shows it at a glance, before the first task is lost in a log. One banner
per command, also with ``--processes`` (the parent prints it). It fits :data:`WIDTH` columns: a line that
cannot is cut, never wrapped into a mess. Passwords in URLs are masked.

The worker's own ``started`` and ``stopped: 12 succeeded, 1 failed, 2 retried`` lines are logged at INFO;
at the CLI's default level (WARNING, as Celery's worker) :class:`Announcer` prints them instead, so the
start and the end of a worker are always on screen and a busy worker's log is not one line per task.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cogman.brokers.base import queue_names
from cogman.middleware.base import Middleware, WorkerView
from cogman.priority import Priority

if TYPE_CHECKING:
    from cogman.app import App

WIDTH = 100
MASK = "****"


def mask_password(url: str) -> str:
    """``amqp://guest:guest@host:5672//`` -> ``amqp://guest:****@host:5672//``. Everything between the
    first ``:`` of the userinfo and its last ``@`` is hidden, so a password holding ``@`` or ``/`` does
    not leak either."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for stop in ("?", "#"):
        found = rest.find(stop)
        if found != -1:
            end = min(end, found)
    at = rest.rfind("@", 0, end)
    if at == -1:
        return url
    user, colon, _ = rest[:at].partition(":")
    return f"{scheme}://{user}{':' + MASK if colon else ''}{rest[at:]}"


def render(
    app: App,
    *,
    concurrency: int,
    processes: int,
    priorities: Sequence[Priority],
    app_path: str | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> str:
    """The banner text (no trailing newline)."""
    from cogman import __version__

    config = app.config
    prefetch = config.prefetch_for(concurrency)
    threads = f"{concurrency} handler thread{'s' if concurrency != 1 else ''}"
    if processes > 1:
        total = f"{threads} x {processes} processes = {concurrency * processes}"
    else:
        total = f"{threads}, 1 process"
    lines = [
        f" -------------- cogman {__version__} worker ".ljust(WIDTH - 1, "-"),
        " [config]",
        _field("app", f"{app.name} ({app_path})" if app_path else app.name),
        _field("host", f"{socket.gethostname()}, pid {os.getpid()}"),
        _field("broker", mask_password(config.broker_url)),
    ]
    for index, url in enumerate(config.backend_urls):
        lines.append(_field("backend" if index == 0 else "", mask_password(url)))
    lines.append(_field("concurrency", f"{total} (prefetch {prefetch} per process)"))
    port = metrics_port if metrics_port is not None else config.metrics_port
    if port is not None:
        where = f"port {port}" if processes == 1 else f"ports {port}..{port + processes - 1}"
        lines.append(_field("metrics", f"Prometheus on {where} of {metrics_host or config.metrics_host}"))
    lines += ["", " [queues]"]
    counts = {Priority.HIGH: config.high_priority_queue_count, Priority.LOW: config.low_priority_queue_count}
    for priority in priorities:
        lines.append(_queues_line(priority, queue_names(priority, counts[priority], config.queue_prefix)))
    lines += ["", f" [tasks] {len(app.tasks)} registered"]
    if not app.tasks:
        lines.append("   (none: every task this worker receives is dead-lettered as unknown)")
    lines += _task_lines(app)
    return "\n".join(_cut(line) for line in lines)


def _field(label: str, value: str) -> str:
    return f" .> {label + ':' if label else '':<13} {value}"


def _queues_line(priority: Priority, names: list[str]) -> str:
    count = f"({len(names)} queue{'s' if len(names) != 1 else ''})"
    head = f" .> {priority.value + ':':<5} "
    listed = ", ".join(names)
    if len(head) + len(listed) + len(count) + 1 > WIDTH:
        listed = f"{names[0]} .. {names[-1]}"
    return f"{head}{listed} {count}"


def _task_lines(app: App) -> list[str]:
    rows = sorted(app.tasks.values(), key=lambda task: task.name)
    options = [f"priority={task.priority.value:<4}  retry={task.retry}" for task in rows]
    longest = max((len(option) for option in options), default=0)
    column = min(max((len(task.name) for task in rows), default=0), WIDTH - 8 - longest)
    lines = []
    for task, option in zip(rows, options, strict=True):
        if len(task.name) <= column:
            lines.append(f"   . {task.name:<{column}}  {option}")
        else:  # a long name gets its own line, the options under it
            lines += [f"   . {task.name}", f"     {'':<{column}}  {option}"]
    return lines


def _cut(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 3] + "..."


class Announcer(Middleware):
    """Prints a worker's ready and stopped lines on stdout when the log level hides the worker's own."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def worker_boot(self, worker: WorkerView) -> None:
        if self._hidden():
            counts = {Priority.HIGH: worker.app.config.high_priority_queue_count,
                      Priority.LOW: worker.app.config.low_priority_queue_count}  # fmt: skip
            prefix = worker.app.config.queue_prefix
            queues = [name for p in worker.priorities for name in queue_names(p, counts[p], prefix)]
            print(_cut(f"{self.prefix}ready: {worker.concurrency} threads consuming {', '.join(queues)}"), flush=True)

    def worker_shutdown(self, worker: WorkerView) -> None:
        from cogman.worker.worker import describe_outcomes

        if self._hidden():
            print(f"{self.prefix}stopped: {describe_outcomes(worker.outcomes)}", flush=True)

    @staticmethod
    def _hidden() -> bool:
        return not logging.getLogger("cogman.worker").isEnabledFor(logging.INFO)
