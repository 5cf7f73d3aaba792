"""The operator's subcommands of ``cogman``: ``api``, ``inspect``, ``list``, ``retry``, ``queues``,
``purge``, ``ping``, ``workers`` and ``cancel`` (cli/cancel.py). Each is a thin front over
:mod:`cogman.admin`; tables use rich, with every value printed as plain text (a task name is data,
never markup).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cogman.admin import actions as admin
from cogman.backends import go_query
from cogman.backends.base import TaskQuery
from cogman.cli.cancel import add_cancel_command, run_cancel
from cogman.errors import CogmanError, TaskNotFound
from cogman.middleware.queue_stats import QueueSnapshot, queue_snapshot
from cogman.record import TaskRecord, utcnow
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.app import App

ADMIN_COMMANDS = ("api", "inspect", "list", "retry", "queues", "purge", "ping", "workers", "cancel")


def _bounded_int(low: int, high: int) -> Any:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {number}")
        return number

    return parse


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {number}")
    return number


def add_admin_commands(commands: Any) -> None:
    api = commands.add_parser("api", help="serve the REST API and the dashboard (pip install cogman[api])")
    api.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    api.add_argument("--port", type=_bounded_int(0, 65535), default=8081, help="port (default 8081)")
    api.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without an API token")
    api.add_argument("--cors-origin", action="append", default=[], help="origin a browser may call from (repeat)")

    inspect = commands.add_parser("inspect", help="a task's record and its retry attempts")
    inspect.add_argument("task_id")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")

    listing = commands.add_parser("list", help="a table of task records, newest first")
    listing.add_argument("--status", choices=[s.value for s in Status])
    listing.add_argument("--name")
    listing.add_argument("--primary-key")
    listing.add_argument("--limit", type=_bounded_int(1, 1000), default=20, help="rows (default 20, max 1000)")
    listing.add_argument("--skip", type=_bounded_int(0, 10**9), default=0)

    retry = commands.add_parser("retry", help="run a failed task again now")
    retry.add_argument("task_id")
    retry.add_argument("--retry", type=_bounded_int(1, 1000), default=1, help="retries to add; one runs now")
    retry.add_argument("--force", action="store_true", help="even if its latest attempt has not failed")

    commands.add_parser("queues", help="each queue's waiting messages and consumers")

    purge = commands.add_parser("purge", help="remove every waiting message (tasks recorded failed)")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    ping = commands.add_parser("ping", help="exit 0 when a worker of the app reported recently")
    ping.add_argument("--within", type=_positive_float, default=30.0, help="seconds (default 30)")
    ping.add_argument("--local", action="store_true", help="only workers on this host (a per-pod probe)")

    workers = commands.add_parser("workers", help="the workers whose heartbeat has not expired")
    workers.add_argument("--all-apps", action="store_true", help="workers of every app on this backend")
    add_cancel_command(commands)  # issue 23: cogman/cli/cancel.py


def run_admin(app: App, args: argparse.Namespace) -> int:
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    command: Any = {
        "api": _api,
        "inspect": _inspect,
        "list": _list,
        "retry": _retry,
        "queues": _queues,
        "purge": _purge,
        "ping": _ping,
        "workers": _workers,
        "cancel": run_cancel,
    }[args.command]
    try:
        return int(command(app, args, console))
    finally:
        app.close()


def _api(app: App, args: argparse.Namespace, console: Console) -> int:
    from cogman.api.server import serve

    serve(app, host=args.host, port=args.port, insecure=args.insecure, cors_origins=args.cors_origin)
    return 0


def _inspect(app: App, args: argparse.Namespace, console: Console) -> int:
    try:
        attempts = admin.chain(app.backend, args.task_id)
    except TaskNotFound:
        print(f"cogman: no record for task {args.task_id}", file=sys.stderr)
        return 1
    record = next(r for r in attempts if r.task_id == args.task_id)
    if args.json:
        print(json.dumps({**record.to_dict(), "attempts": [r.to_dict() for r in attempts]}, indent=2, default=str))
        return 0
    fields = Table(show_header=False, box=None)
    for key, value in record.to_dict().items():
        shown = value if isinstance(value, str) else json.dumps(value, default=str)
        fields.add_row(Text(key, style="bold"), Text(shown))
    console.print(fields)
    console.print(_records_table(attempts, title=f"attempts of {record.original_task_id}"))
    return 0


def _list(app: App, args: argparse.Namespace, console: Console) -> int:
    query = TaskQuery(
        status=Status(args.status) if args.status else None,
        name=args.name,
        primary_key=args.primary_key,
        skip=args.skip,
        limit=args.limit,
    )
    page = go_query.list_tasks(app.backend, query, go_query.go_names(app.tasks))  # Go-format tasks beside cogman's
    console.print(_records_table(page.records, title=f"{len(page.records)} of {page.total} record(s)"))
    return 0


def _retry(app: App, args: argparse.Namespace, console: Console) -> int:
    try:
        attempt = admin.retry_task(app, args.task_id, retries=args.retry, force=args.force)
    except TaskNotFound as exc:
        print(f"cogman: {exc}", file=sys.stderr)
        return 1
    except (admin.NotRetryable, admin.RetryBudgetRace) as exc:
        print(f"cogman: {exc}", file=sys.stderr)
        return 1
    console.print(Text(f"retrying {args.task_id} as {attempt.task_id} (attempt {attempt.attempt})"))
    return 0


def _queues(app: App, args: argparse.Namespace, console: Console) -> int:
    report = admin.queue_report(app)
    try:
        snapshot: QueueSnapshot | None = queue_snapshot(app.broker, app.backend, app.config)
    except (CogmanError, ConnectionError) as exc:
        snapshot = None
        console.print(Text(f"unacked and oldest waiting unknown: {exc}", style="yellow"))
    figures = {q.name: q for q in snapshot.queues} if snapshot is not None else {}
    table = Table(title="queues")
    numbers = ("ready", "consumers", "unacked", "oldest waiting (s)")
    for column in ("queue", "kind", *numbers):
        table.add_column(column, justify="right" if column in numbers else "left")
    for queue in report.listed:
        ready = str(queue.ready) if queue.exists else "-"
        found = figures.get(queue.name)
        unacked = str(found.unacked) if found is not None else "-"
        oldest = (
            f"{found.oldest_age_seconds:.1f}" if found is not None and found.oldest_age_seconds is not None else "-"
        )
        table.add_row(Text(queue.name), Text(queue.kind), Text(ready), Text(str(queue.consumers)), Text(unacked),
                      Text(oldest))  # fmt: skip
    total = snapshot.to_dict()["total"] if snapshot is not None else {}
    oldest_total = total.get("oldest_age_seconds")
    table.add_row(Text("total", style="bold"), Text(""), Text(str(report.total_ready)),
                  Text(str(report.total_consumers)), Text(str(total.get("unacked", "-"))),
                  Text(_seconds(oldest_total)))  # fmt: skip
    ladder = report.delay_queues
    if ladder:  # the ladder's 28 levels in one row: where a countdown, an eta or a retry backoff waits
        name = ladder[0].name if len(ladder) == 1 else f"{ladder[0].name} .. {ladder[-1].name}"
        ready = str(report.delayed) if any(q.exists for q in ladder) else "-"
        table.add_row(Text(name), Text("delayed"), Text(ready), Text("-"), Text("-"), Text("-"))
    console.print(table)
    if snapshot is not None and not snapshot.oldest_exact:
        console.print(Text("oldest waiting: lower bounds (many delayed tasks ahead of the waiting ones)"))
    return 0


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _purge(app: App, args: argparse.Namespace, console: Console) -> int:
    waiting = admin.queue_report(app).total_ready
    if not args.yes:
        if not sys.stdin.isatty():
            print("cogman: purge removes every waiting task; pass --yes to confirm", file=sys.stderr)
            return 1
        answer = input(f"Remove the {waiting} waiting message(s) of app {app.name}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing purged")
            return 1
    removed = admin.purge(app)
    console.print(Text(f"purged {removed} message(s); their tasks are recorded failed ({admin.PURGED})"))
    return 0


def _ping(app: App, args: argparse.Namespace, console: Console) -> int:
    import socket

    host = socket.gethostname() if args.local else None
    workers = admin.live_workers(app, within=args.within, host=host)
    if not workers:
        where = f" on {host}" if host else ""
        print(f"cogman: no worker of app {app.name}{where} reported in the last {args.within:g} s", file=sys.stderr)
        return 1
    console.print(_workers_table(workers))
    return 0


def _workers(app: App, args: argparse.Namespace, console: Console) -> int:
    workers = admin.live_workers(app, all_apps=args.all_apps)
    console.print(_workers_table(workers))
    return 0


def _records_table(records: list[TaskRecord], title: str) -> Table:
    table = Table(title=title)
    for column in ("task_id", "name", "status", "attempt", "created", "duration", "error"):
        table.add_column(column, overflow="fold")
    for record in records:
        duration = f"{record.duration:.4f}s" if record.duration is not None else ""
        error = (record.fail_error or "")[:80]
        table.add_row(
            Text(record.task_id),
            Text(record.name),
            Text(record.status.value),
            Text(str(record.attempt)),
            Text(record.created_at.strftime("%Y-%m-%d %H:%M:%S")),
            Text(duration),
            Text(error),
        )
    return table


def _workers_table(workers: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(workers)} worker(s)")
    for column in ("worker", "app", "queues", "concurrency", "tasks done", "last seen"):
        table.add_column(column)
    now = utcnow()
    for info in workers:
        try:
            age = f"{(now - datetime.fromisoformat(str(info.get('last_seen')))).total_seconds():.0f}s ago"
        except ValueError:
            age = "?"
        table.add_row(
            Text(str(info.get("id"))),
            Text(str(info.get("app"))),
            Text(",".join(str(q) for q in info.get("queues") or [])),
            Text(str(info.get("concurrency"))),
            Text(str(info.get("tasks_done"))),
            Text(age),
        )
    return table
