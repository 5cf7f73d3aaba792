"""The periodic-task subcommands of ``cogman``: ``beat`` (send the ticks), ``periodic`` (list the
schedules with their next and last run), and the beat that ``worker --beat`` runs beside a worker."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cogman.record import utcnow
from cogman.scheduling.beat import Beat
from cogman.scheduling.periodic import last_tick

if TYPE_CHECKING:
    from cogman.app import App

SCHEDULE_COMMANDS = ("beat", "periodic")


def add_schedule_commands(commands: Any) -> None:
    commands.add_parser("beat", help="send the app's periodic tasks (any number of beats may run)")
    periodic = commands.add_parser("periodic", help="the periodic schedules, with their next and last run")
    periodic.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run_schedule(app: App, args: argparse.Namespace) -> int:
    try:
        return _beat(app) if args.command == "beat" else _periodic(app, args.json)
    finally:
        app.close()


def with_beat(app: App, run_worker: Callable[[], int]) -> int:
    """``worker --beat``: a beat thread beside the worker (or beside the supervisor of ``--processes``)."""
    if not app.schedules:
        print(f"cogman: warning: --beat, but app {app.name} has no periodic schedule", file=sys.stderr)
    beat = Beat(app).start()
    try:
        return run_worker()
    finally:
        beat.stop()


def _beat(app: App) -> int:
    if not app.schedules:
        print(f"cogman: app {app.name} has no periodic schedule (app.periodic / app.add_periodic)", file=sys.stderr)
        return 1
    beat = Beat(app)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: beat.stop())
    beat.run()
    return 0


def _periodic(app: App, as_json: bool) -> int:
    now = utcnow()
    rows = []
    for schedule in app.schedules.values():
        last = last_tick(app.backend, schedule)
        rows.append(
            {
                "name": schedule.name,
                "task": schedule.task,
                "schedule": schedule.describe(),
                "next_run": schedule.next_after(now).isoformat(),
                "last_run": last[0].isoformat() if last else None,
                "last_status": last[1] if last else None,
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"{len(rows)} periodic schedule(s) of app {app.name} (times in UTC)")
    for column in ("name", "task", "schedule", "next run", "last run", "last status"):
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = [row[key] or "-" for key in ("name", "task", "schedule", "next_run", "last_run", "last_status")]
        table.add_row(*(Text(str(cell)) for cell in cells))
    Console(highlight=False, width=None if sys.stdout.isatty() else 200).print(table)
    return 0
