"""When a task may run: ``countdown``, ``eta`` and ``expires`` as given at send time, and as checked when
a worker is about to start it.

Both become absolute UTC moments once, when the task is sent, and travel with the message and the
record. So the delay a broker applies is computed from the moment itself whenever the message is
actually published (time spent in an outbox or waiting for re-enqueue counts), and a worker can tell
a delivery that came early (clock skew, a foreign producer) or too late (``expires``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cogman.record import utcnow

#: The longest delay, in seconds: what the RabbitMQ delay ladder's 28 levels can hold (about 8.5 years);
#: the memory broker keeps to it too, so a send that works on one works on the other.
LEVELS = 28
MAX_DELAY = 2**LEVELS - 1


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a task may start (``eta``, None: at once) and after when it must not (``expires``)."""

    eta: datetime | None = None
    expires: datetime | None = None


def plan(
    countdown: float | None = None,
    eta: datetime | None = None,
    expires: float | datetime | None = None,
    now: datetime | None = None,
) -> Schedule:
    """Check the send options and turn them into moments. Raises ValueError (TypeError for a wrong type)
    naming the bad value, before anything is recorded."""
    now = now or utcnow()
    if countdown is not None and eta is not None:
        raise ValueError(f"give countdown or eta, not both (countdown={countdown!r}, eta={eta!r})")
    start: datetime | None = None
    if countdown is not None:
        seconds = _seconds("countdown", countdown)
        start = now + timedelta(seconds=seconds) if seconds > 0 else None
    elif eta is not None:
        start = _moment("eta", eta)
    if start is not None and (start - now).total_seconds() > MAX_DELAY:
        raise ValueError(f"the task would start {start.isoformat()}, more than {MAX_DELAY} s (the longest delay) away")
    deadline: datetime | None = None
    if isinstance(expires, datetime):
        deadline = _moment("expires", expires)
    elif expires is not None:
        deadline = now + timedelta(seconds=_seconds("expires", expires))
    if start is not None and deadline is not None and deadline <= start:
        raise ValueError(
            f"expires ({deadline.isoformat()}) is not after the planned start ({start.isoformat()}): "
            "the task could never run"
        )
    return Schedule(eta=start, expires=deadline)


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _moment(name: str, value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime (aware, or naive meaning UTC), got {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def seconds_until(moment: datetime, now: float | None = None) -> float:
    """Seconds from ``now`` (epoch seconds, default the clock) to ``moment``; negative once past."""
    return moment.timestamp() - (time.time() if now is None else now)


def whole_seconds_until(moment: datetime, now: float | None = None) -> int:
    """The delay a broker should apply: whole seconds, rounded up so a task never starts early,
    0 once due, at most MAX_DELAY."""
    return int(min(MAX_DELAY, max(0, math.ceil(seconds_until(moment, now)))))


def expired_error(expires: datetime) -> str:
    """The ``fail_error`` of a task that was not started before it expired."""
    return f"expired: not started before {expires.isoformat()}"
