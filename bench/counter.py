"""Completion is read from a Redis counter every task increments once, polled every few milliseconds.

Polling one key costs the system under test one cheap GET per poll, whatever N is, unlike asking a
result backend about every task. A counter that stops moving for ``STALL_TIMEOUT`` fails the phase.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.settings import POLL_INTERVAL, STALL_TIMEOUT


class Stalled(RuntimeError):
    """The counter did not move for too long: the worker is stuck, dead, or dropped tasks."""


@dataclass(frozen=True)
class Completion:
    """``perf_counter`` times at which the counter was first seen above zero, and seen at the target."""

    first_at: float
    first_count: int
    last_at: float


def read_count(client: Any, key: str) -> int:
    value = client.get(key)
    return int(value) if value is not None else 0


def wait_for_count(
    client: Any,
    key: str,
    target: int,
    *,
    poll: float = POLL_INTERVAL,
    stall_timeout: float = STALL_TIMEOUT,
    check: Callable[[], None] | None = None,
) -> Completion:
    """Poll ``key`` until it reaches ``target``; ``check`` may raise (e.g. when the worker died)."""
    first: tuple[float, int] | None = None
    last_value, changed_at = -1, time.perf_counter()
    while True:
        value = read_count(client, key)
        now = time.perf_counter()
        if first is None and value > 0:
            first = (now, value)
        if value >= target:
            assert first is not None
            return Completion(first[0], first[1], now)
        if value != last_value:
            last_value, changed_at = value, now
        elif now - changed_at > stall_timeout:
            raise Stalled(f"{key} stuck at {value} of {target} for {stall_timeout:.0f} s")
        if check is not None:
            check()
        time.sleep(poll)
