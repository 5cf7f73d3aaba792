"""The ``cogman`` command: ``cogman -A module[:attr] worker|status``, ``cogman demo``, ``cogman --version``.

argparse rather than click: the standard library covers four subcommands, and the core stays small.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence

from cogman import __version__
from cogman.app import App
from cogman.errors import CogmanError

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cogman", description="cogman: a distributed task runner")
    parser.add_argument("--version", action="version", version=f"cogman {__version__}")
    parser.add_argument("-A", "--app", help="the app to use, as module[:attr] (attr defaults to 'app')")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run a worker for the app's tasks")
    worker.add_argument("-c", "--concurrency", type=int, help="handler threads per process (default: config)")
    worker.add_argument("-Q", "--queues", default="high,low", help="priority families to consume: high,low")
    worker.add_argument("-p", "--processes", type=int, default=1, help="worker processes (default 1)")
    worker.add_argument("--metrics-port", type=int, help="serve Prometheus metrics here (process i: port + i)")
    worker.add_argument("--beat", action="store_true", help="also send the app's periodic tasks (cogman beat)")

    status = commands.add_parser("status", help="print a task's record as JSON")
    status.add_argument("task_id")

    demo = commands.add_parser("demo", help="run an in-process demo on the embedded memory broker")
    demo.add_argument("-n", "--tasks", type=int, default=400, help="tasks to send (default 400)")
    demo.add_argument("-c", "--concurrency", type=int, default=8, help="worker threads (default 8)")

    from cogman.cli_admin import add_admin_commands
    from cogman.cli_schedule import add_schedule_commands

    add_admin_commands(commands)
    add_schedule_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            from cogman.demo import run_demo

            return run_demo(tasks=args.tasks, concurrency=args.concurrency)
        if not args.app:
            raise AppPathError(f"cogman {args.command} needs -A module[:attr], e.g. cogman -A proj.tasks worker")
        app = load_app(args.app)
        from cogman.cli_schedule import SCHEDULE_COMMANDS, run_schedule, with_beat

        if args.command == "worker":
            return with_beat(app, lambda: _worker(app, args)) if args.beat else _worker(app, args)
        from cogman.cli_admin import ADMIN_COMMANDS, run_admin

        if args.command in ADMIN_COMMANDS:
            return run_admin(app, args)
        if args.command in SCHEDULE_COMMANDS:
            return run_schedule(app, args)
        return _status(app, args.task_id)
    except CogmanError as exc:
        print(f"cogman: error: {exc}", file=sys.stderr)
        return 2


def _worker(app: App, args: argparse.Namespace) -> int:
    priorities = [part.strip() for part in args.queues.split(",") if part.strip()]
    if app.config.broker_url.startswith("memory://"):
        log.warning(
            "this worker uses the memory:// broker: only tasks sent from inside this process reach it. "
            "Set broker=... or COGMAN_BROKER_URL=amqp://... to share tasks between processes."
        )
    if args.processes > 1:
        from cogman.processes import run_processes

        return run_processes(
            args.app,
            processes=args.processes,
            concurrency=args.concurrency,
            queues=priorities,
            metrics_port=args.metrics_port,
        )
    if args.metrics_port is not None:
        from cogman.metrics import install_prometheus

        install_prometheus(app, args.metrics_port)
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
