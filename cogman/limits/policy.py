"""What a task declares: ``rate_limit="100/m"`` (optionally per ``rate_limit_key``) and
``max_concurrency=N`` (optionally per ``concurrency_key``), checked when the task is declared.

A limit is named by a scope: the task's name, or the task's name and the key its key function returns
for one call's arguments, so two tasks never share a limit by accident.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cogman.errors import PoisonMessage

#: Seconds per unit of a rate.
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*([smh])\s*")
#: The options ``@app.task`` passes on to :meth:`TaskLimits.build`.
OPTIONS = ("rate_limit", "rate_limit_key", "max_concurrency", "concurrency_key")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` starts in any window of ``period`` seconds."""

    count: int
    period: float

    def __str__(self) -> str:
        unit = next(name for name, seconds in UNITS.items() if seconds == self.period)
        return f"{self.count}/{unit}"


def parse_rate(task_name: str, value: object) -> Rate:
    """``"N/s"``, ``"N/m"`` or ``"N/h"`` with N >= 1; anything else raises ValueError naming the task."""
    found = _RATE.fullmatch(value) if isinstance(value, str) else None
    if found is None or int(found.group(1)) < 1:
        raise ValueError(
            f"task {task_name!r}: rate_limit must look like '100/m' (N/s, N/m or N/h, N a whole number >= 1), "
            f"got {value!r}"
        )
    return Rate(int(found.group(1)), UNITS[found.group(2)])


@dataclass(frozen=True, slots=True)
class Scopes:
    """The limits one call is under: the rate scope and the concurrency scope (None: not limited)."""

    rate: str | None
    concurrency: str | None


@dataclass(frozen=True, slots=True)
class TaskLimits:
    name: str
    rate: Rate | None
    rate_key: Callable[..., Any] | None
    max_concurrency: int | None
    concurrency_key: Callable[..., Any] | None

    @classmethod
    def build(cls, name: str, **options: Any) -> TaskLimits | None:
        """The limits of task ``name`` from its decorator options, or None when it has none. Raises
        TypeError/ValueError naming the task and the option for anything it cannot honour."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TypeError(f"task {name!r}: unknown option(s) {', '.join(map(repr, unknown))}")
        rate_limit, rate_key = options.get("rate_limit"), options.get("rate_limit_key")
        most, concurrency_key = options.get("max_concurrency"), options.get("concurrency_key")
        for option, key in (("rate_limit_key", rate_key), ("concurrency_key", concurrency_key)):
            if key is not None and not callable(key):
                raise TypeError(f"task {name!r}: {option} must be a callable taking the task's arguments, got {key!r}")
        if rate_key is not None and rate_limit is None:
            raise ValueError(f"task {name!r}: rate_limit_key needs a rate_limit")
        if concurrency_key is not None and most is None:
            raise ValueError(f"task {name!r}: concurrency_key needs a max_concurrency")
        if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
            raise ValueError(f"task {name!r}: max_concurrency must be a whole number >= 1, got {most!r}")
        if rate_limit is None and most is None:
            return None
        rate = None if rate_limit is None else parse_rate(name, rate_limit)
        return cls(name, rate, rate_key, most, concurrency_key)

    def scopes(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Scopes:
        """The scopes of one call. A key function that raises or returns something other than a string or
        an integer can never admit these arguments: PoisonMessage names the task and the option."""
        rate = None if self.rate is None else self._scope("rate_limit_key", self.rate_key, task_id, args, kwargs)
        most = self.max_concurrency
        concurrency = (
            None if most is None else self._scope("concurrency_key", self.concurrency_key, task_id, args, kwargs)
        )
        return Scopes(rate, concurrency)

    def _scope(
        self, option: str, key: Callable[..., Any] | None, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        if key is None:
            return self.name
        try:
            value = key(*args, **kwargs)
        except Exception as exc:
            raise PoisonMessage(f"{option} of task {self.name} raised {type(exc).__name__}: {exc}", task_id) from None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise PoisonMessage(
                f"{option} of task {self.name} must return a string or an integer, got {value!r}", task_id
            )
        return f"{self.name}:{value}"


def rate_wait(starts: list[float], now: float, rate: Rate) -> float:
    """Seconds until one more start fits ``rate``, given the starts of the last window (ascending, none
    older than ``now - rate.period``); 0 when it fits now. A sliding log: exact for any window."""
    if len(starts) < rate.count:
        return 0.0
    return max(starts[len(starts) - rate.count] + rate.period - now, 1e-6)
