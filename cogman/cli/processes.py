"""``cogman -A app worker --processes P -c N``: P worker processes with N handler threads each.

Threads share one GIL, so CPU-bound handlers need processes; Dramatiq does the same. The parent only
supervises: it starts P children with the ``spawn`` method (a fresh interpreter that imports the app
itself, so no broker connection or lock is ever inherited half-used from a fork), turns its first SIGINT or
SIGTERM into a graceful stop of the children (SIGUSR1) and the second into an immediate one (SIGUSR2),
and waits. Each child is an ordinary worker: its own RabbitMQ consumer with its own
prefetch, so the broker spreads messages over the children and a child that dies loses nothing (its
unacked messages are redelivered to the others).

A child that exits on its own is a fault (a crash, an OOM kill): the parent does not restart it in a
loop, it stops the others and exits non-zero, so the process manager above (systemd, Kubernetes,
supervisord) sees the failure and applies its own restart policy. A child the parent itself ended, for a
task past its hard time limit (cogman/worker/hard_limits.py), is replaced by a new one with the same index.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from cogman.middleware.heartbeat import PROCESS_INDEX_ENV

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from cogman.app import App
    from cogman.worker.hard_limits import Overseer

log = logging.getLogger("cogman.processes")

#: How long stopping children get beyond the app's grace period before they are killed.
KILL_AFTER = 10.0


def run_processes(
    app_path: str,
    *,
    processes: int,
    concurrency: int | None,
    queues: Sequence[str],
    metrics_port: int | None = None,
    overrides: dict[str, Any] | None = None,
    metrics_host: str | None = None,
) -> int:
    """Run ``processes`` workers for the app at ``app_path`` (``module[:attr]``) until SIGINT/SIGTERM.

    With ``metrics_port`` (or the app's ``config.metrics_port``) child i serves metrics on port + i, on
    ``metrics_host`` (or ``config.metrics_host``). ``overrides`` (``--broker``/``--backend``:
    ``broker_url``, ``backend_url``) reach each child in its environment (``COGMAN_BROKER_URL``/
    ``COGMAN_BACKEND_URL``, for an app that reads them) and are applied with ``app.reconfigure`` (for one
    that names its URLs in code) before it connects; the parent applies them too, as it records the
    attempts it ends for their hard time limit.

    Returns the exit code: 0 after a requested stop, otherwise the first unexpected child exit code.
    """
    if processes < 1:
        raise ValueError(f"--processes must be at least 1, got {processes}")
    from cogman.cli.main import load_app

    app = load_app(app_path)  # also fails early, in the parent, on a bad -A
    if overrides and app.config.with_options(**overrides) != app.config:
        app.reconfigure(**overrides)
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    stop = threading.Event()
    overseer = _overseer(app)

    def start(index: int) -> BaseProcess:
        reader, writer = context.Pipe(duplex=False) if overseer is not None else (None, None)
        arguments = (app_path, concurrency, list(queues), level, index, metrics_port, dict(overrides or {}))
        child = context.Process(
            target=_child_main,
            args=(*arguments, metrics_host, writer),
            name=f"cogman-worker-{index}",
            daemon=False,
        )
        child.start()
        if overseer is not None and reader is not None and writer is not None:
            writer.close()  # the child holds the write end: its death is an EOF here
            overseer.add(child, reader)
        return child

    children: list[BaseProcess] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():  # the second signal: the children stop at once (SIGUSR2)
            log.warning("received %s again; stopping %d worker process(es) at once", name, len(children))
            _signal_children(children, signal.SIGUSR2)
            return
        log.warning("received %s; stopping %d worker process(es) gracefully (again: at once)", name, len(children))
        stop.set()
        if overseer is not None:
            overseer.close()  # it ends no child from here on

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        children.extend(start(index) for index in range(processes))
        log.info("started %d worker process(es): %s", len(children), ", ".join(str(c.pid) for c in children))
        if overseer is not None:
            overseer.start()
        exit_code = _supervise(children, stop, start, overseer)
    finally:
        if overseer is not None:
            overseer.close()
        _stop_children(children, app.config.grace_period + KILL_AFTER)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code


def _overseer(app: App) -> Overseer | None:
    """The hard time limit's overseer, when the app has a task with a ``time_limit`` and the limit is on."""
    grace = app.config.hard_time_limit_grace
    if grace is None or not any(task.time_limit is not None for task in app.tasks.values()):
        return None
    from cogman.worker.hard_limits import Overseer

    return Overseer(app, grace)


def _supervise(
    children: list[BaseProcess],
    stop: threading.Event,
    start: Callable[[int], BaseProcess],
    overseer: Overseer | None,
) -> int:
    """Wait for a stop request or for a child to exit: one the overseer ended is replaced; one that
    exited on its own stops the rest."""
    while not stop.is_set():
        sentinels = {child.sentinel: index for index, child in enumerate(children)}
        ready = multiprocessing.connection.wait(list(sentinels), timeout=0.5)
        if stop.is_set():
            break  # a Ctrl-C reaches the children too: them exiting now is the requested stop
        for sentinel in ready:
            index = sentinels[sentinel]  # type: ignore[index]
            child = children[index]
            child.join()
            if overseer is not None and overseer.ended_here(child):
                children[index] = start(index)
                log.warning(
                    "worker process %s was ended for a hard time limit; started worker process %s in its place",
                    child.pid,
                    children[index].pid,
                )
                continue
            log.error(
                "worker process %s exited unexpectedly (exit code %s); stopping the others", child.pid, child.exitcode
            )
            return child.exitcode if child.exitcode and child.exitcode > 0 else 1  # killed by a signal: 1
    return 0


def _signal_children(children: Sequence[BaseProcess], signum: int) -> None:
    for child in children:
        if child.is_alive() and child.pid is not None:
            os.kill(child.pid, signum)


def _stop_children(children: Sequence[BaseProcess], timeout: float) -> None:
    """Stop every live child gracefully (SIGUSR1), wait, and SIGKILL what is left."""
    _signal_children(children, signal.SIGUSR1)
    for child in children:
        child.join(timeout)
        if child.is_alive():
            log.warning("worker process %s did not stop in %.0f s; killing it", child.pid, timeout)
            child.kill()
            child.join()


def _child_main(
    app_path: str,
    concurrency: int | None,
    queues: list[str],
    level: int,
    index: int = 0,
    metrics_port: int | None = None,
    overrides: dict[str, Any] | None = None,
    metrics_host: str | None = None,
    reports: Connection | None = None,
) -> None:
    """Entry point of one worker process: load the app fresh and run a worker until told to stop.

    A child ignores SIGINT (a Ctrl-C reaches the whole process group: the parent acts on it). SIGTERM and
    the parent's SIGUSR1 stop it gracefully, however many arrive (systemd or ``timeout`` signal the
    whole group, so a child hears SIGTERM directly *and* through its parent); only the parent's SIGUSR2
    stops it at once. A fatal broker error exits with code 2, which the parent reports.
    """
    from cogman.cli.logs import TaskLogContext, configure_logging, log_format_of_environment

    log_format = log_format_of_environment()
    configure_logging(level, log_format, "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    from cogman.cli.banner import Announcer
    from cogman.cli.main import load_app
    from cogman.config.environment import variable
    from cogman.errors import CogmanError

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ[PROCESS_INDEX_ENV] = str(index)
    overrides = overrides or {}
    for option, value in overrides.items():
        os.environ[variable(option)] = value if isinstance(value, str) else ",".join(value)
    app = load_app(app_path)
    if overrides:
        app.reconfigure(**overrides)
    base_port = metrics_port if metrics_port is not None else app.config.metrics_port
    if base_port is not None:
        from cogman.middleware.prometheus import install_prometheus

        install_prometheus(app, base_port + index, metrics_host)
    if reports is not None:  # the supervisor times this process's time-limited tasks (hard limit)
        from cogman.worker.hard_limits import Reporter

        Reporter(app, reports).install()
    app.middleware.middleware.append(Announcer(f"worker process {index} (pid {os.getpid()}): "))
    if log_format == "json":
        app.middleware.middleware.append(TaskLogContext())
    worker = app.worker(concurrency=concurrency, priorities=queues)
    try:
        worker.start(block=True, signals=(signal.SIGTERM, signal.SIGUSR1), immediate=(signal.SIGUSR2,))
        log.info("worker process %s stopped", os.getpid())
    except CogmanError as exc:
        log.critical("worker process %s: %s", os.getpid(), exc)
        app.close()
        sys.exit(2)
    app.close()
