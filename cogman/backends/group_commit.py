"""Group commit: the writes that handler threads make at the same moment go to the store in one round trip.

A worker with N handler threads makes two backend writes per task (``in_progress``, then the outcome).
Each alone costs a round trip; under load, N threads wait on N round trips that could have been one.
So a write joins a batch: the first thread to arrive while no batch is in flight leads, takes every
write queued so far and sends them together (one pipeline); writes arriving meanwhile wait for that
round trip to end and go in the next batch, led by one of them. A lone write leads its own batch at
once: nothing waits for company, so a single task is never delayed by the batching.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Slot:
    item: Any
    done: bool = False
    result: Any = None
    error: BaseException | None = field(default=None, repr=False)


class GroupCommit(Generic[T]):
    """``submit(item)`` returns the result the batch runner gave for ``item``.

    ``run(items)`` returns one result per item, in order (it is called by one thread at a time); an
    exception it raises is raised to every caller of that batch.
    """

    def __init__(self, run: Callable[[Sequence[Any]], Sequence[T]]) -> None:
        self._run = run
        self._pending: list[_Slot] = []
        self._busy = False
        self._changed = threading.Condition()
        #: Batches run and items written, for the performance notes and tests.
        self.batches = 0
        self.items = 0

    def submit(self, item: Any) -> T:
        slot = _Slot(item)
        with self._changed:
            self._pending.append(slot)
            while self._busy and not slot.done:
                self._changed.wait()
            if not slot.done:  # lead: take everything queued, this write included
                self._busy = True
                batch, self._pending = self._pending, []
        if not slot.done:
            self._lead(batch)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[no-any-return]

    def _lead(self, batch: list[_Slot]) -> None:
        try:
            results = self._run([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} writes gave {len(results)} results")
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        except BaseException as exc:
            for slot in batch:
                slot.error = exc
        finally:
            with self._changed:
                for slot in batch:
                    slot.done = True
                self.batches += 1
                self.items += len(batch)
                self._busy = False
                self._changed.notify_all()
