"""Cancelling a workflow (issue 23): every step that has not finished, and the steps not sent yet.

A chain's later steps and a chord's callback have no record until what comes before them finishes;
their ids are derived, so a cancel records them ``cancelled`` in advance. Creates are insert-if-absent
and a worker only publishes a step whose record is unconfirmed (``send_if_unconfirmed``, ``send_if_new``),
so a step recorded cancelled is never sent: a chord's callback never runs. The steps are cancelled last
first, so a worker that sees an earlier step cancelled finds the later ones cancelled already, and a
step created by a worker while the cancel runs is cancelled by the second call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cogman.priority import Priority
from cogman.record import utcnow
from cogman.sending.client import new_record
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.record import TaskRecord
    from cogman.signature import SendingApp


def cancel_steps(app: SendingApp, steps: Sequence[tuple[str, str]]) -> bool:
    """Cancel each ``(task id, task name)`` in the order given; True if any step had not finished."""
    changed = False
    for task_id, name in steps:
        before = app.backend.cancel(task_id)
        if before is None:
            app.backend.create([_cancelled_record(name, task_id)])
            app.backend.cancel(task_id)  # a worker created the step meanwhile: cancel that record
            changed = True
        elif not before.is_final:
            changed = True
    return changed


def _cancelled_record(name: str, task_id: str) -> TaskRecord:
    """The record of a step never sent: its arguments were to come from the steps before it."""
    record = new_record(name, (), {}, priority=Priority.HIGH, retry=0, primary_key=None, task_id=task_id)
    now = utcnow()
    return record.evolve(status=Status.CANCELLED, updated_at=now, history=((Status.CANCELLED, now),))
