"""Issue 25's targets as data (part 1: the default, at equal guarantees; part 2: the lean profile against
Dramatiq's default, the trade-offs it copies), and their verdicts from the medians of a run.

A target compares one figure of a subject row with one figure of a reference row (or with a fixed
limit), as a ratio of medians. A target whose figures are missing (a system failed, a phase did not
run) is ``None``: neither passed nor failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.stats import ratio


@dataclass(frozen=True)
class Target:
    name: str
    subject: str
    metric: str
    #: The reference role, or None for an absolute limit.
    reference: str | None
    reference_metric: str | None
    #: ">=" (higher is better) or "<=".
    op: str
    threshold: float

    def describe(self) -> str:
        if self.reference is None:
            return f"{self.subject} {self.metric} {self.op} {self.threshold:g}"
        return f"{self.subject} {self.metric} / {self.reference} {self.reference_metric} {self.op} {self.threshold:g}"


TARGETS = (
    Target(
        "end to end >= 2x Dramatiq with confirms",
        "cogman-default",
        "e2e_rate",
        "dramatiq-confirm",
        "e2e_rate",
        ">=",
        2.0,
    ),
    Target(
        "end to end >= 3x Celery with confirms", "cogman-default", "e2e_rate", "celery-confirm", "e2e_rate", ">=", 3.0
    ),
    Target(
        "drain >= 1.3x Dramatiq with confirms",
        "cogman-default",
        "drain_rate",
        "dramatiq-confirm",
        "drain_rate",
        ">=",
        1.3,
    ),
    Target(
        "single send >= 2.5x Dramatiq with confirms",
        "cogman-default",
        "single_rate",
        "dramatiq-confirm",
        "single_rate",
        ">=",
        2.5,
    ),
    Target(
        "send_many >= 5x Dramatiq with confirms' single send",
        "cogman-default",
        "batch_rate",
        "dramatiq-confirm",
        "single_rate",
        ">=",
        5.0,
    ),
    Target(
        "send->start p50 <= 2x raw kombu (the ceiling)",
        "cogman-default",
        "latency_p50_ms",
        "ceiling",
        "latency_p50_ms",
        "<=",
        2.0,
    ),
    Target("worker RSS <= 60 MiB a process", "cogman-default", "rss_process_mib", None, None, "<=", 60.0),
    Target("lean: end to end >= 1.2x Dramatiq", "cogman-lean", "e2e_rate", "dramatiq", "e2e_rate", ">=", 1.2),
    Target("lean: single send >= 1x Dramatiq", "cogman-lean", "single_rate", "dramatiq", "single_rate", ">=", 1.0),
    Target("lean: drain >= 1.2x Dramatiq", "cogman-lean", "drain_rate", "dramatiq", "drain_rate", ">=", 1.2),
)
#: The subject of each part's targets.
PART_SUBJECTS = {1: "cogman-default", 2: "cogman-lean"}


@dataclass(frozen=True)
class Verdict:
    target: Target
    value: float | None
    passed: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.name,
            "rule": self.target.describe(),
            "value": self.value,
            "threshold": self.target.threshold,
            "passed": self.passed,
        }


def evaluate(target: Target, medians: Mapping[str, Mapping[str, float | None]]) -> Verdict:
    """``medians`` maps a role to its figures' medians."""
    subject = medians.get(target.subject, {}).get(target.metric)
    if target.reference is None:
        value = subject
    else:
        assert target.reference_metric is not None
        value = ratio(subject, medians.get(target.reference, {}).get(target.reference_metric))
    if value is None:
        return Verdict(target, None, None)
    passed = value >= target.threshold if target.op == ">=" else value <= target.threshold
    return Verdict(target, value, passed)


def evaluate_all(medians: Mapping[str, Mapping[str, float | None]]) -> list[Verdict]:
    return [evaluate(target, medians) for target in TARGETS]
