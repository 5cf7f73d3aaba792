"""``cogman cancel``: cancel tasks by id, or every task matching ``--name`` and ``--status`` (issue 23).

Exit codes: 0 when every task named was cancelled (or, in bulk, whatever matched), 1 when a task had
finished already (nothing changed: its status is printed) or no record has the id, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from rich.text import Text

from cogman.admin.cancel import BULK_LIMIT, CANCELLABLE, cancel_matching, cancel_or_refuse
from cogman.errors import NotCancellable, TaskNotFound
from cogman.status import Status

if TYPE_CHECKING:
    from rich.console import Console

    from cogman.app import App


def add_cancel_command(commands: Any) -> None:
    cancel = commands.add_parser(
        "cancel", help="cancel tasks: by id, or every one matching --name and --status (docs/control.md)"
    )
    cancel.add_argument("task_ids", nargs="*", metavar="TASK_ID", help="tasks to cancel (any attempt's id)")
    cancel.add_argument("--name", help="bulk: every task with this name")
    cancel.add_argument("--status", choices=[s.value for s in CANCELLABLE], help="bulk: only in this status")
    cancel.add_argument("--limit", type=int, default=BULK_LIMIT, help=f"bulk: most records read (max {BULK_LIMIT})")


def run_cancel(app: App, args: argparse.Namespace, console: Console) -> int:
    bulk = args.name is not None or args.status is not None
    if bool(args.task_ids) == bulk:
        print("cogman cancel: give task ids, or --name and/or --status for a bulk cancel (not both)", file=sys.stderr)
        return 2
    if bulk:
        status = Status(args.status) if args.status else None
        try:
            report = cancel_matching(app.backend, name=args.name, status=status, limit=args.limit)
        except ValueError as exc:
            print(f"cogman cancel: {exc}", file=sys.stderr)
            return 2
        more = f"; more matched than --limit {args.limit}: run it again" if report.more else ""
        console.print(Text(f"cancelled {len(report.cancelled)} task(s), {len(report.skipped)} had finished{more}"))
        return 0
    code = 0
    for task_id in args.task_ids:
        try:
            cancel_or_refuse(app.backend, task_id)
        except (NotCancellable, TaskNotFound) as exc:
            print(f"cogman: {exc}", file=sys.stderr)
            code = 1
            continue
        console.print(Text(f"cancelled {task_id}"))
    return code
