"""The ``cogman`` command: ``cogman -A module[:attr] worker|status``, ``cogman demo``, ``cogman --version``;
the operator commands are in :mod:`cogman.cli_admin`.

argparse rather than click: the standard library covers a dozen flat subcommands, and the core stays
small. Every argument is checked by argparse (``type=`` functions, ``choices``), so a bad one is a
one-line usage error with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cogman import __version__
from cogman.app import App
from cogman.cli.logs import LOG_FORMAT_ENV, LOG_FORMATS, TaskLogContext, configure_logging
from cogman.errors import CogmanError
from cogman.priority import Priority

log = logging.getLogger("cogman.cli")


class AppPathError(CogmanError):
    """``-A`` does not lead to a cogman App."""


def load_app(path: str) -> App:
    """``module[:attr]`` (attr defaults to ``app``) to an App, with errors that say which part failed."""
    module_name, _, attr = path.partition(":")
    attr = attr or "app"
    if not module_name:
        raise AppPathError(f"-A {path!r}: give a module, like -A myproject.tasks or -A myproject.tasks:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppPathError(
                f"-A {path!r}: no module named {exc.name!r} (searched from {os.getcwd()}; "
                "run cogman from your project's root or fix PYTHONPATH)"
            ) from None
        raise AppPathError(f"-A {path!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise AppPathError(f"-A {path!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        found = sorted(name for name, value in vars(module).items() if isinstance(value, App))
        hint = f"; App objects in it: {', '.join(found)}" if found else ""
        raise AppPathError(f"-A {path!r}: module {module_name!r} has no attribute {attr!r}{hint}") from None
    if not isinstance(app, App):
        raise AppPathError(f"-A {path!r}: {module_name}:{attr} is a {type(app).__name__}, not a cogman App")
    return app


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Celery's worker default: the banner and the stop line are printed whatever the level, so WARNING
#: loses no lifecycle news and keeps one line per task out of a busy worker's log (``-l INFO`` for it).
DEFAULT_LOG_LEVEL = "WARNING"
#: Commands that run without ``-A``.
WITHOUT_APP = ("demo",)


def _at_least(low: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {number}")
        return number

    return parse


def _port(value: str) -> int:
    number = _at_least(0)(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (0-65535), got {number}")
    return number


def _address(value: str) -> str:
    """An address to listen on: a host name or an IP, nothing else (no port, no scheme)."""
    if not value.strip() or any(char in value for char in "/ ") or value.count(":") == 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not an address to listen on (like 127.0.0.1 or 0.0.0.0)")
    return value


def _families(value: str) -> list[Priority]:
    """``high``, ``low`` or ``high,low``: the queue families a worker consumes."""
    chosen = [part.strip() for part in value.split(",") if part.strip()]
    if not chosen:
        raise argparse.ArgumentTypeError("name at least one family: high, low or high,low")
    try:
        return sorted({Priority.parse(part) for part in chosen}, key=lambda p: p.order)
    except ValueError:
        bad = next(part for part in chosen if part.lower() not in {p.value for p in Priority})
        raise argparse.ArgumentTypeError(f"{bad!r} is not a queue family; choose high, low or high,low") from None


def _url(value: str) -> str:
    """A URL at least (its scheme is checked by the app, which names the ones it supports)."""
    if "://" not in value:
        raise argparse.ArgumentTypeError(f"{value!r} is not a URL (like amqp://user:password@host:5672//)")
    return value


def _log_level_option(parser: argparse.ArgumentParser, *flags: str, default: object) -> None:
    parser.add_argument(
        *flags,
        dest="log_level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default,
        metavar="LEVEL",
        help=f"log level: {', '.join(LOG_LEVELS)} (any case; default {DEFAULT_LOG_LEVEL})",
    )


def _url_options(parser: argparse.ArgumentParser, default: object) -> None:
    """``--broker``/``--backend``: on the top-level parser (Celery's place) and on each command that
    loads the app, so they work on either side of the command name."""
    parser.add_argument(
        "-b", "--broker", type=_url, default=default, metavar="URL", help="broker URL, overriding the app's"
    )
    parser.add_argument(
        "--backend",
        type=_url,
        action="append",
        default=default,
        metavar="URL",
        help="backend URL, overriding the app's (repeat for several: all written, the first read)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cogman", description="cogman: a distributed task runner")
    parser.add_argument("--version", action="version", version=f"cogman {__version__}")
    parser.add_argument("-A", "--app", help="the app to use, as module[:attr] (attr defaults to 'app')")
    _log_level_option(parser, "--log-level", "--loglevel", default=None)
    _url_options(parser, default=None)
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a worker for the app's tasks")
    worker.add_argument(
        "-c", "--concurrency", type=_at_least(1), help="handler threads per process (default: config, 8)"
    )
    worker.add_argument(
        "-Q", "--queues", type=_families, default=list(Priority), help="families to consume: high, low or high,low"
    )
    hard = "supervised worker processes, with hard time limits (default: one process, unsupervised)"
    worker.add_argument("-p", "--processes", type=_at_least(1), help=hard)
    worker.add_argument("--metrics-port", type=_port, help="serve Prometheus metrics here (process i: port + i)")
    where = "address the metrics listen on (default: config, 127.0.0.1; 0.0.0.0: every interface)"
    worker.add_argument("--metrics-host", type=_address, metavar="ADDRESS", help=where)
    _log_level_option(worker, "-l", "--loglevel", "--log-level", default=argparse.SUPPRESS)
    worker.add_argument("--beat", action="store_true", help="also send the app's periodic tasks (cogman beat)")
    worker.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="text (default) or json: one object a line"
    )

    status = commands.add_parser("status", help="print a task's record as JSON")
    status.add_argument("task_id")

    demo = commands.add_parser("demo", help="run an in-process demo on the embedded memory broker")
    demo.add_argument("-n", "--tasks", type=_at_least(1), default=400, help="tasks to send (default 400)")
    demo.add_argument("-c", "--concurrency", type=_at_least(1), default=8, help="worker threads (default 8)")

    from cogman.cli.admin import add_admin_commands
    from cogman.cli.schedule import add_schedule_commands

    add_admin_commands(commands)
    add_schedule_commands(commands)
    for name, command in commands.choices.items():
        if name not in WITHOUT_APP:
            _url_options(command, default=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log_format = getattr(args, "log_format", "text")
    configure_logging(args.log_level or DEFAULT_LOG_LEVEL, log_format)
    if log_format == "json":
        os.environ[LOG_FORMAT_ENV] = log_format  # for --processes children
    try:
        if args.command == "demo":
            from cogman.cli.demo import run_demo

            return run_demo(tasks=args.tasks, concurrency=args.concurrency)
        if not args.app:
            raise AppPathError(f"cogman {args.command} needs -A module[:attr], e.g. cogman -A proj.tasks worker")
        app = load_app(args.app)
        overrides = url_overrides(args.broker, args.backend)
        if overrides:
            app.reconfigure(**overrides)  # before anything connects
        from cogman.cli.schedule import SCHEDULE_COMMANDS, run_schedule, with_beat

        if args.command == "worker":
            if args.beat:
                return with_beat(app, lambda: _worker(app, args, overrides))
            return _worker(app, args, overrides)
        _note_memory(app, args.command)
        from cogman.cli.admin import ADMIN_COMMANDS, run_admin

        if args.command in ADMIN_COMMANDS:
            return run_admin(app, args)
        if args.command in SCHEDULE_COMMANDS:
            return run_schedule(app, args)
        return _status(app, args.task_id)
    except CogmanError as exc:
        print(f"cogman: error: {exc}", file=sys.stderr)
        return 2


def url_overrides(broker: str | None, backends: Sequence[str] | None) -> dict[str, Any]:
    """Config options from ``--broker`` / ``--backend``."""
    overrides: dict[str, Any] = {}
    if broker:
        overrides["broker_url"] = broker
    if backends:
        overrides["backend_url"] = backends[0] if len(backends) == 1 else list(backends)
    return overrides


#: Operator commands that read the broker's queues (all of them read or write the backend, but these two).
BROKER_ONLY = ("queues", "purge")
BROKER_TOO = ("retry", *BROKER_ONLY)


def _note_memory(app: App, command: str) -> None:
    """memory:// lives inside one process: an operator command there sees nothing of the others."""
    notes = []
    if command not in BROKER_ONLY and app.config.backend_urls[0].startswith("memory://"):
        notes.append(
            "records are on the memory:// backend, which is per process: a record written by another process "
            "(a worker, a client) is never found here; use --backend redis://... or COGMAN_BACKEND_URL"
        )
    if command in BROKER_TOO and app.config.broker_url.startswith("memory://"):
        notes.append(
            "messages are on the memory:// broker, which is per process: another process's queues are never "
            "seen here; use --broker amqp://... or COGMAN_BROKER_URL"
        )
    for note in notes:
        print(f"cogman {command}: note: app {app.name}'s {note}", file=sys.stderr)


def _worker(app: App, args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from cogman.cli.banner import Announcer, render

    priorities: list[Priority] = args.queues
    concurrency = args.concurrency or app.config.concurrency
    if app.config.broker_url.startswith("memory://"):
        log.warning(
            "this worker uses the memory:// broker: only tasks sent from inside this process reach it. "
            "Set broker=... or COGMAN_BROKER_URL=amqp://... to share tasks between processes."
        )
    banner = render(
        app,
        concurrency=concurrency,
        processes=args.processes or 1,
        priorities=priorities,
        app_path=args.app,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    print(banner, flush=True)
    if args.processes is not None:
        from cogman.cli.processes import run_processes

        return run_processes(
            args.app,
            processes=args.processes,
            concurrency=args.concurrency,
            queues=[p.value for p in priorities],
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            overrides=overrides,
        )
    port = args.metrics_port if args.metrics_port is not None else app.config.metrics_port
    if port is not None and (args.metrics_port is not None or args.metrics_host is not None):
        from cogman.middleware.prometheus import install_prometheus

        install_prometheus(app, port, args.metrics_host)
    if not any(isinstance(m, Announcer) for m in app.middleware.middleware):
        app.middleware.middleware.append(Announcer())
    if args.log_format == "json":
        app.middleware.middleware.append(TaskLogContext())
    try:
        app.worker(concurrency=args.concurrency, priorities=priorities).start()
    finally:
        app.close()
    return 0


def _status(app: App, task_id: str) -> int:
    """The record as JSON; when retries followed, the chain's latest attempt under ``latest_attempt``."""
    record = app.backend.get(task_id)
    if record is None:
        print(f"cogman: no record for task {task_id}", file=sys.stderr)
        return 1
    shown = record.to_dict()
    latest = app.result(task_id).latest()
    if latest.task_id != record.task_id:
        shown["latest_attempt"] = latest.to_dict()
    print(json.dumps(shown, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
