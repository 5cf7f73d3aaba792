"""Task priority: two families of queues, high and low, as in Cogman."""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """Which queue family a task goes to. A worker starts the high tasks it holds before the low ones."""

    HIGH = "high"
    LOW = "low"

    @property
    def order(self) -> int:
        """Sort key for a worker's local queue: smaller starts first."""
        return 0 if self is Priority.HIGH else 1

    @classmethod
    def parse(cls, value: str | Priority) -> Priority:
        """Priority from a user's value (``Priority.HIGH`` or ``"high"``/``"low"``, any case)."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        raise ValueError(f"unknown priority {value!r}; expected 'high' or 'low'")
