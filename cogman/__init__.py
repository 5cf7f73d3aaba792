"""cogman: a distributed task runner for Python, on RabbitMQ with Redis/MongoDB task logs."""

import logging

from cogman.app import App
from cogman.backoff import Retry
from cogman.config.settings import Config
from cogman.errors import (
    CogmanError,
    CorruptRecord,
    NotCancellable,
    PoisonMessage,
    StepFailed,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TimeLimitExceeded,
)
from cogman.middleware.base import Middleware
from cogman.priority import Priority
from cogman.record import TaskRecord
from cogman.result import AsyncResult
from cogman.signature import Signature
from cogman.status import Status
from cogman.task import Task, TaskContext
from cogman.workflows.canvas import chain, chord, group
from cogman.workflows.results import ChainResult, ChordResult, GroupResult

__version__ = "0.1.0"

logging.getLogger("cogman").addHandler(logging.NullHandler())

__all__ = [
    "App",
    "AsyncResult",
    "ChainResult",
    "ChordResult",
    "CogmanError",
    "Config",
    "CorruptRecord",
    "GroupResult",
    "Middleware",
    "NotCancellable",
    "PoisonMessage",
    "Priority",
    "Retry",
    "Signature",
    "Status",
    "StepFailed",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskNotFound",
    "TaskRecord",
    "TimeLimitExceeded",
    "__version__",
    "chain",
    "chord",
    "group",
]
