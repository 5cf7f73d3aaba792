"""Retry control: whether a failed attempt is retried, and after how long.

A task's options say it: ``retry_backoff`` (seconds, or a tenacity wait strategy such as
``wait_exponential(multiplier=1, max=60)``) and ``retry_for`` (the exceptions worth a retry; others fail
the chain at once). A handler may also ``raise Retry(countdown=...)``. Whatever is decided here, the
chain's budget still rules: :meth:`cogman.client.Client.spawn_retry` spends one retry or finds none left.
The retry is then sent as a delayed task, through the same path as ``countdown``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from cogman.delays import MAX_DELAY

log = logging.getLogger("cogman.worker")

#: Seconds, or a callable of a ``tenacity.RetryCallState`` (every tenacity ``wait_*`` strategy) giving them.
Backoff = float | Callable[[tenacity.RetryCallState], float]


class Retry(Exception):
    """Raise it from a task to ask for a retry: ``raise cogman.Retry(countdown=10)``.

    It spends the chain's retry budget like any failure (and is retried whatever ``retry_for`` says);
    with no retry left the chain fails with an error that says so. Without ``countdown`` the task's
    ``retry_backoff`` applies."""

    def __init__(self, countdown: float | None = None, reason: str | None = None) -> None:
        if countdown is not None:
            _check_seconds("countdown", countdown)
        asked = "retry asked for" if countdown is None else f"retry asked for in {countdown:g} s"
        super().__init__(f"{asked}: {reason}" if reason else asked)
        self.countdown = countdown


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A task's ``retry_backoff`` and ``retry_for``, checked when the task is declared."""

    backoff: Backoff = 0.0
    #: None: every exception is retried (while the budget lasts).
    retry_for: tuple[type[BaseException], ...] | None = None

    @classmethod
    def build(cls, task_name: str, backoff: Any = None, retry_for: Any = None) -> RetryPolicy:
        """Raise TypeError or ValueError naming the task and the bad option."""
        if backoff is None:
            backoff = 0.0
        elif not callable(backoff):
            try:
                _check_seconds("retry_backoff", backoff)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"task {task_name!r}: {exc}, or a tenacity wait strategy") from None
            backoff = float(backoff)
        if retry_for is not None:
            if isinstance(retry_for, type):
                retry_for = (retry_for,)
            if not isinstance(retry_for, tuple) or not all(
                isinstance(kind, type) and issubclass(kind, BaseException) for kind in retry_for
            ):
                raise TypeError(
                    f"task {task_name!r}: retry_for must be a tuple of exception classes, got {retry_for!r}"
                )
        return cls(backoff, retry_for)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Retry after ``countdown`` seconds, or not at all (``why_not``)."""

    retry: bool
    countdown: float = 0.0
    why_not: str | None = None


def decide(policy: RetryPolicy, exc: BaseException, failed_attempt: int) -> RetryDecision:
    """What to do after attempt number ``failed_attempt`` (1 for the first) raised ``exc``."""
    if isinstance(exc, Retry):
        asked = exc.countdown
        return RetryDecision(
            True, min(asked, float(MAX_DELAY)) if asked is not None else wait(policy, exc, failed_attempt)
        )
    if policy.retry_for is not None and not isinstance(exc, policy.retry_for):
        names = ", ".join(kind.__name__ for kind in policy.retry_for)
        return RetryDecision(False, why_not=f"{type(exc).__name__} is not in retry_for ({names})")
    return RetryDecision(True, wait(policy, exc, failed_attempt))


def wait(policy: RetryPolicy, exc: BaseException, failed_attempt: int) -> float:
    """The backoff before the next attempt. A strategy that raises or returns something that is not a
    number of seconds is logged and treated as 0: the retry goes out at once rather than not at all."""
    backoff = policy.backoff
    if not callable(backoff):
        return backoff
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = failed_attempt
    state.set_exception((type(exc), exc, exc.__traceback__))
    try:
        seconds = float(backoff(state))
        _check_seconds("the backoff", seconds)
    except Exception:
        log.exception("retry_backoff %r failed for attempt %d; retrying at once", backoff, failed_attempt)
        return 0.0
    return min(seconds, float(MAX_DELAY))


def _check_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
