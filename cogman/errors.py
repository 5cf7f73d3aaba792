"""Exceptions a cogman user can catch, and the ones the worker uses to sort bad messages."""

from __future__ import annotations


class CogmanError(Exception):
    """Base of every error cogman raises on purpose."""


class ConfigError(CogmanError, ValueError):
    """A configuration value is wrong; the message names the option."""


class TaskFailed(CogmanError):
    """The task's last allowed attempt failed. ``error`` holds ``"ExceptionType: message"``,
    ``traceback`` the failed attempt's traceback (when a handler raised), ``attempts`` how many ran."""

    def __init__(self, task_id: str, error: str | None, traceback: str | None = None, attempts: int = 1) -> None:
        after = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"task {task_id} failed{after}: {error}")
        self.task_id = task_id
        self.error = error
        self.traceback = traceback
        self.attempts = attempts


class TaskCancelled(TaskFailed):
    """The task was cancelled (``AsyncResult.cancel``, ``cogman cancel``, ``POST /cancel``) before it
    finished: its latest attempt is recorded ``cancelled``. A TaskFailed, so code that catches failures
    catches it too."""

    def __init__(self, task_id: str, error: str | None = None, traceback: str | None = None, attempts: int = 1) -> None:
        super().__init__(task_id, error, traceback, attempts)
        self.args = (f"task {task_id} was cancelled",)


class NotCancellable(CogmanError):
    """A cancel that changes nothing: the task finished already (``status`` says how), or it is a
    Go-format task (Go Cogman's records have no cancelled status)."""

    def __init__(self, task_id: str, reason: str, status: str | None = None) -> None:
        super().__init__(f"task {task_id} not cancelled: {reason}")
        self.task_id = task_id
        self.reason = reason
        self.status = status


class TaskNotFound(CogmanError, LookupError):
    """No record exists for a task id (never sent, or expired from the backend)."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no record for task {task_id}")
        self.task_id = task_id


class CorruptRecord(CogmanError, ValueError):
    """A stored record is not cogman's JSON; ``key`` names where it was read from."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"corrupt task record at {key}: {reason}")
        self.key = key
        self.reason = reason


class PoisonMessage(CogmanError):
    """A delivered message that can never run: bad JSON, missing headers, unknown task, bad arguments.

    The worker dead-letters it with ``reason`` and records the task failed when ``task_id`` is known.
    """

    def __init__(self, reason: str, task_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.task_id = task_id


class MessageTooLarge(CogmanError, ValueError):
    """A task's encoded message is over ``Config.max_message_size``; raised before anything is recorded."""


class ResultRejected(CogmanError):
    """A handler returned what its record cannot hold (not JSON, or over ``Config.max_result_size``).

    The attempt fails without a retry: the handler ran, and running it again would repeat its side
    effects (a charged card) only to return the same unstorable value."""


class BrokerUnavailable(CogmanError, ConnectionError):
    """The broker could not be reached within the configured time."""


class SendBufferFull(CogmanError):
    """Lean profile: ``send_buffer_limit`` tasks already wait for the background sender (the backend or
    the broker is slower than the sends); nothing of this send was recorded or sent."""


class BackendUnavailable(CogmanError, ConnectionError):
    """The task log (Redis, MongoDB) could not be reached for a read or a retry-budget update.

    Status writes never raise it: they are buffered and replayed (see docs/backends.md)."""


class BrokerAccessRefused(CogmanError):
    """The broker refused the login or the vhost: a configuration mistake, not an outage. The message
    names the user, host:port and vhost, never the password."""


class ConsumerStopped(CogmanError):
    """The broker consumer's I/O thread ended on an error it cannot recover from (the cause is chained)."""


class TopologyError(CogmanError):
    """A broker queue exists with other arguments than cogman declares; the message names the queue."""


class PublishError(CogmanError):
    """The broker refused a message (nack) or did not confirm it in time."""


class StepFailed(TaskFailed):
    """A workflow failed because one of its steps did: ``step`` names it (``"chain step 2 of 3
    (shop.resize)"``, ``"chord member 4 of 100 (shop.add)"``, ``"chord callback (shop.total)"``);
    ``task_id``, ``error``, ``traceback`` and ``attempts`` are that step's."""

    def __init__(self, step: str, task_id: str, error: str | None, traceback: str | None = None, attempts: int = 1):
        super().__init__(task_id, error, traceback, attempts)
        after = f" after {attempts} attempts" if attempts > 1 else ""
        self.args = (f"{step} failed{after} (task {task_id}): {error}",)
        self.step = step


class TimeLimitExceeded(CogmanError):
    """An attempt ran longer than its task's ``time_limit``."""

    def __init__(self, limit: float) -> None:
        super().__init__(f"time limit exceeded ({limit:g} s)")
        self.limit = limit


class HardTimeLimitExceeded(TimeLimitExceeded):
    """An attempt still ran ``hard_time_limit_grace`` seconds after its ``time_limit``: its worker process
    was ended by the ``--processes`` supervisor. A TimeLimitExceeded, so ``retry_for`` naming that covers it."""

    def __init__(self, limit: float, grace: float) -> None:
        CogmanError.__init__(
            self, f"hard time limit exceeded ({limit:g} s + {grace:g} s grace): its worker process was ended"
        )
        self.limit = limit
        self.grace = grace
