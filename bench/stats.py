"""Medians with their spread, percentiles and guarded ratios: the arithmetic behind every figure."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """One figure over several rounds: its median, and the lowest and highest round."""

    median: float
    low: float
    high: float
    rounds: int

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.low, "max": self.high, "rounds": self.rounds}


def spread(values: Sequence[float | None]) -> Spread | None:
    """Median and min-max of the rounds that produced the figure; None when none did."""
    present = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not present:
        return None
    return Spread(statistics.median(present), min(present), max(present), len(present))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolating linearly between the closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, or None when either is missing or the reference is zero."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def rate(count: int, seconds: float) -> float | None:
    """Tasks per second; None for an interval too short to measure."""
    return count / seconds if seconds > 0 else None
