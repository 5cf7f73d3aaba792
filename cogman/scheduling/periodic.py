"""Periodic schedules: a task sent at every tick of a cron expression (in a time zone) or of an interval.

A tick is one moment a schedule fires. Its task id derives from the schedule's name and the tick's UTC
time, so every beat process (cogman/scheduling/beat.py) computes the same id for the same tick, and the backend's
``create_new`` lets exactly one of them send it. A tick's record carries ``primary_key`` =
``periodic:<schedule name>`` and the tick time in its payload, which is how a beat finds a schedule's
last run after a restart, and how ``cogman periodic`` shows it.

Cron expressions are evaluated by cronsim (Debian cron's rules, DST included: a tick inside a skipped
hour runs at the end of the gap, a tick in a repeated hour runs once), in the schedule's time zone.
Interval ticks are the multiples of the interval since the Unix epoch (UTC), so replicas started at
different moments agree on them; a time zone has no meaning for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from cogman.backends.base import TaskQuery
from cogman.message import check_json_arguments

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping

    from cogman.backends.base import Backend
    from cogman.task import Task

PERIODIC_NAMESPACE = uuid.UUID("b6a0d1c4-5e2f-4f87-9a3b-7c1d2e8f6a05")
PRIMARY_KEY_PREFIX = "periodic:"
#: The shortest interval: ticks are identified to the microsecond, but a beat pass takes milliseconds.
MIN_EVERY = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Schedule:
    """One periodic schedule of an app; build it with ``app.periodic`` or ``app.add_periodic``."""

    name: str
    task: str
    cron: str | None = None
    every: timedelta | None = None
    tz: tzinfo = UTC
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Late ticks sent after downtime (None: ``Config.periodic_catch_up``).
    catch_up: int | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"periodic {self.name}: give exactly one of cron=... or every=timedelta(...)")
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime.now(self.tz))
            except CronSimError as exc:
                raise ValueError(f"periodic {self.name}: bad cron expression {self.cron!r}: {exc}") from None
        if self.every is not None:
            if not isinstance(self.every, timedelta) or self.every < MIN_EVERY:
                raise ValueError(f"periodic {self.name}: every must be a timedelta of at least 1 s, got {self.every!r}")
            if str(self.tz) != "UTC":
                raise ValueError(f"periodic {self.name}: tz applies to cron schedules; intervals count from UTC")
        if self.catch_up is not None and self.catch_up < 0:
            raise ValueError(f"periodic {self.name}: catch_up must not be negative, got {self.catch_up}")

    @property
    def primary_key(self) -> str:
        return PRIMARY_KEY_PREFIX + self.name

    def describe(self) -> str:
        if self.every is not None:
            return f"every {self.every}"
        return f"{self.cron} ({self.tz})"

    def tick_id(self, tick: datetime) -> str:
        return str(uuid.uuid5(PERIODIC_NAMESPACE, f"{self.name}@{tick.astimezone(UTC).isoformat()}"))

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (UTC)."""
        if self.every is not None:
            step = self.every // _MICROSECOND
            return _EPOCH + _MICROSECOND * ((_since_epoch(moment) // step + 1) * step)
        assert self.cron is not None
        return next(CronSim(self.cron, moment.astimezone(self.tz))).astimezone(UTC)

    def ticks(self, now: datetime, after: datetime, limit: int) -> list[datetime]:
        """The ticks in ``(after, now]``, newest first, at most ``limit`` (UTC)."""
        found: list[datetime] = []
        if limit <= 0:
            return found
        if self.every is not None:
            step = self.every // _MICROSECOND
            index = _since_epoch(now) // step
            while len(found) < limit and (tick := _EPOCH + _MICROSECOND * (index * step)) > after:
                found.append(tick)
                index -= 1
            return found
        assert self.cron is not None
        # cronsim's reverse iteration from a moment with microseconds yields that very second first.
        for tick in CronSim(self.cron, now.astimezone(self.tz).replace(microsecond=1), reverse=True):
            tick = tick.astimezone(UTC)
            if tick <= after or len(found) >= limit:
                break
            found.append(tick)
        return found

    def tick_extra(self, tick: datetime) -> dict[str, Any]:
        """What a tick's record carries in its payload besides the arguments."""
        return {"periodic": {"schedule": self.name, "tick": tick.astimezone(UTC).isoformat()}}


def _since_epoch(moment: datetime) -> int:
    return (moment.astimezone(UTC) - _EPOCH) // _MICROSECOND


def zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None or tz == "UTC":
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}; use an IANA name such as 'Europe/Paris'") from None


def add_schedule(
    tasks: Mapping[str, Task[Any, Any]],
    schedules: MutableMapping[str, Schedule],
    task: Task[Any, Any] | str,
    *,
    cron: str | None = None,
    every: timedelta | None = None,
    tz: str | tzinfo | None = None,
    args: Iterable[Any] = (),
    kwargs: dict[str, Any] | None = None,
    name: str | None = None,
    catch_up: int | None = None,
) -> Schedule:
    """Register a schedule in ``schedules`` (the app's); its arguments are checked now, like a send's,
    against the handler when ``tasks`` (the app's registry) has it."""
    task_name = task if isinstance(task, str) else task.name
    call, keywords = tuple(args), dict(kwargs or {})
    check_json_arguments(task_name, call, keywords)
    registered = tasks.get(task_name)
    if registered is not None:
        try:
            registered.check_arguments(call, keywords)
        except Exception as exc:
            raise TypeError(f"periodic {name or task_name}: {exc}") from None
    schedule = Schedule(name or task_name, task_name, cron, every, zone(tz), call, keywords, catch_up)
    if schedule.name in schedules:
        raise ValueError(f"a periodic schedule named {schedule.name!r} exists already; give this one name=...")
    schedules[schedule.name] = schedule
    return schedule


def periodic(
    register_task: Callable[[Any], Task[Any, Any]],
    tasks: Mapping[str, Task[Any, Any]],
    schedules: MutableMapping[str, Schedule],
    cron: str | None,
    **options: Any,
) -> Callable[[Any], Task[Any, Any]]:
    """``@app.periodic(...)`` over a function (registered as a task too, with ``register_task``: the app's
    ``task``) or over a task."""
    from cogman.task import Task

    def register(target: Any) -> Task[Any, Any]:
        task: Task[Any, Any] = target if isinstance(target, Task) else register_task(target)
        add_schedule(tasks, schedules, task, cron=cron, **options)
        return task

    return register


def last_tick(backend: Backend, schedule: Schedule) -> tuple[datetime, str] | None:
    """The newest tick recorded for this schedule and its status, or None (never ran, or expired)."""
    page = backend.query(TaskQuery(primary_key=schedule.primary_key, limit=10))
    found: list[tuple[datetime, str]] = []
    for record in page.records:
        tick = record.payload.get("periodic", {}).get("tick")
        try:
            found.append((datetime.fromisoformat(tick), record.status.value))
        except (TypeError, ValueError):
            continue  # not a tick record of ours: a task sent by hand with this primary key
    return max(found) if found else None
