"""cogman: a distributed task runner for Python, on RabbitMQ with Redis/MongoDB task logs."""

import logging

from cogman.app import App
from cogman.backoff import Retry
from cogman.config import Config
from cogman.errors import CogmanError, CorruptRecord, PoisonMessage, TaskFailed, TaskNotFound
from cogman.limits import TimeLimitExceeded
from cogman.middleware import Middleware
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.result import AsyncResult
from cogman.status import Status
from cogman.task import Task, TaskContext

__version__ = "0.1.0"

logging.getLogger("cogman").addHandler(logging.NullHandler())

__all__ = [
    "App",
    "AsyncResult",
    "CogmanError",
    "Config",
    "CorruptRecord",
    "Middleware",
    "PoisonMessage",
    "Priority",
    "Retry",
    "Status",
    "Task",
    "TaskContext",
    "TaskFailed",
    "TaskNotFound",
    "TaskRecord",
    "TimeLimitExceeded",
    "__version__",
]
