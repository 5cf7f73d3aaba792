"""How the command logs: ``text`` (one line per record, the default) or ``json`` (``--log-format json``).

JSON is one object per line: ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, and
``exception`` with its traceback when there is one. A line logged while a handler thread runs an attempt
also names it (``task_id``, ``task_name``, ``attempt``, ``status``: what the attempt's record says at that
moment), and, when the attempt is traced (docs/tracing.md), ``trace_id`` and ``span_id`` (hex, as
OpenTelemetry's exporters write them), so a log line and its span can be joined.

``--processes`` children log as their parent: the format travels to them in ``COGMAN_LOG_FORMAT``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cogman.middleware.base import Middleware

if TYPE_CHECKING:
    from cogman.message import Message

LOG_FORMATS = ("text", "json")
#: Carries ``--log-format`` to ``--processes`` children.
LOG_FORMAT_ENV = "COGMAN_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_attempts = threading.local()


def configure_logging(level: int | str, log_format: str = "text", text_format: str = TEXT_FORMAT) -> None:
    """The root logger's level and its one handler (stderr), in ``log_format``."""
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format=text_format)


def log_format_of_environment() -> str:
    value = os.environ.get(LOG_FORMAT_ENV, "text")
    return value if value in LOG_FORMATS else "text"


class TaskLogContext(Middleware):
    """Tells :class:`JsonFormatter` which attempt the handler thread runs, and its status."""

    def before_execute(self, message: Message) -> None:
        stack = _stack()
        stack.append({
            "task_id": message.task_id,
            "task_name": message.name,
            "attempt": message.attempt,
            "status": "in_progress",
        })  # fmt: skip

    def after_execute(self, message: Message, *, result: Any = None, exception: BaseException | None = None) -> None:
        stack = _stack()
        if stack and stack[-1]["task_id"] == message.task_id:
            stack[-1]["status"] = "failed" if exception is not None else "success"

    def after_outcome(self, message: Message | None, outcome: str) -> None:
        stack = _stack()
        if message is not None and stack and stack[-1]["task_id"] == message.task_id:
            stack.pop()


def _stack() -> list[dict[str, Any]]:
    stack: list[dict[str, Any]] | None = getattr(_attempts, "stack", None)
    if stack is None:
        stack = _attempts.stack = []
    return stack


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        stack = getattr(_attempts, "stack", None)
        if stack:
            line.update(stack[-1])
        line.update(_trace_ids())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


def _trace_ids() -> dict[str, str]:
    """The current span's ids, when OpenTelemetry is loaded (never imported here) and a span is current."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}
