"""What a worker does when a workflow step ends, before the step's message is acked.

A chain step that succeeded sends the next step, with the result in front of its arguments; one that
failed for good (its last allowed attempt, or a dead-lettered message) records every later step
``failed`` with why it never ran. A chord member adds its outcome to the chord's set in the backend;
the member whose outcome completes the set (or any later one: a redelivery) creates the callback's
record and publishes it, and only the call that created the record publishes (``create_new``), so the
callback is sent once however the members race. A failed member fails the chord at once (the callback
recorded ``failed``, "not run: ...") unless the chord is partial.

A manual retry of a failed step that succeeds resumes the workflow: the "not run" records its failure
left are replaced by the steps themselves (:func:`cogman.claims.send_if_unconfirmed`), and a chord's
member outcomes are read as they stand now, since the chord's set keeps each member's first outcome.

Everything here is idempotent: ids are derived (:mod:`cogman.workflow_spec`), creates are insert-if-absent
and joins keep a member's first outcome. That is what makes the crash windows safe: the executor calls
in here after the step's outcome is recorded and acks only after (and after the publish is confirmed),
so a worker that dies in between leaves the step's message to be redelivered, and the redelivery, which
finds the step final and does not run it, calls :func:`after_redelivery` to do this part again.
docs/workflows.md walks through each window.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from cogman.errors import TaskNotFound
from cogman.priority import Priority
from cogman.record import utcnow
from cogman.result import AsyncResult
from cogman.scheduling.claims import process_claimant, send_if_new, send_if_unconfirmed
from cogman.sending.client import new_record
from cogman.signature import NOT_RUN, ChainStep, ChordMember, WorkflowSpec, callback_id, next_step_id
from cogman.signature import parse_workflow as parse
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.base import Started
    from cogman.brokers.base import Receipt
    from cogman.message import Message
    from cogman.record import TaskRecord
    from cogman.sending.host import SendingHost
    from cogman.signature import Signature

log = logging.getLogger("cogman.workflow")


def involved(message: Message, started: Started | None) -> bool:
    """Whether the attempt may be a workflow step; no I/O. A retry attempt's message carries no spec (it
    is on its first attempt's record), so every retry attempt is looked up."""
    if message.workflow is not None:
        return True
    original = started.original_task_id if started is not None else message.original_task_id
    return original != message.task_id


def after_success(app: SendingHost, message: Message, started: Started | None, result: Any) -> Receipt | None:
    located = _locate(app, message, started)
    if located is None:
        return None
    spec, step_id = located
    if isinstance(spec, ChainStep):
        return _send_next(app, spec, step_id, result)
    return _join(app, spec, step_id, {"ok": result, "task": message.name})


def after_failure(app: SendingHost, message: Message, started: Started | None, error: str) -> Receipt | None:
    """The step's last allowed attempt failed, or its message was dead-lettered."""
    located = _locate(app, message, started)
    if located is None:
        return None
    spec, step_id = located
    if isinstance(spec, ChainStep):
        _record_not_run(app, spec, step_id, f"step {spec.position} ({message.name}) failed: {error}")
        return None
    return _join(app, spec, step_id, {"failed": error, "task": message.name})


def after_redelivery(app: SendingHost, message: Message, started: Started | None) -> Receipt | None:
    """The step was final when its message came again: its worker may have died before sending what
    follows, so send it again (each part is idempotent)."""
    record = app.backend.get(message.task_id)
    if record is None:
        return None
    if record.status is Status.SUCCESS:
        return after_success(app, message, started, record.result)
    if record.status in (Status.FAILED, Status.CANCELLED) and _is_last_attempt(app, record):
        return after_failure(app, message, started, record.fail_error or record.status.value)
    return None


def _locate(app: SendingHost, message: Message, started: Started | None) -> tuple[WorkflowSpec, str] | None:
    """The spec and the step's id (its first attempt's id, from which the next ids derive)."""
    step_id = started.original_task_id if started is not None else message.original_task_id
    if message.workflow is not None:
        return message.workflow, step_id
    original = app.backend.get(step_id) if step_id != message.task_id else None
    if original is None:
        return None
    try:
        spec = parse(original.payload.get("workflow"))
    except (TypeError, ValueError) as exc:
        log.error("task %s: the workflow spec on its first attempt is malformed, ignored: %s", step_id, exc)
        return None
    return None if spec is None else (spec, step_id)


def _send_next(app: SendingHost, spec: ChainStep, step_id: str, result: Any) -> Receipt | None:
    following, rest = spec.rest[0], spec.rest[1:]
    next_id = next_step_id(step_id)
    extra = {"workflow": ChainStep(spec.position + 1, spec.total, rest).to_dict()} if rest else None
    try:
        [record] = app.new_records(following.name, [((result, *following.args), following.kwargs)],
                                   task_ids=[next_id], extras=[extra], **following.send_options())  # fmt: skip
    except (TypeError, ValueError) as exc:  # the result does not fit the next step, or is too large
        error = f"not sent: {type(exc).__name__}: {exc}"
        log.error("chain step %d (%s) %s", spec.position + 1, following.name, error)
        app.backend.create([_failed_record(app, following, next_id, error)])
        if rest:
            where = ChainStep(spec.position + 1, spec.total, rest)
            _record_not_run(app, where, next_id, f"step {spec.position + 1} ({following.name}) failed: {error}")
        return None
    return send_if_unconfirmed(app, record)


def _record_not_run(app: SendingHost, spec: ChainStep, step_id: str, reason: str) -> None:
    """Every step after ``spec``'s is recorded failed, "not run: <reason>"."""
    records, previous = [], step_id
    for step in spec.rest:
        previous = next_step_id(previous)
        records.append(_failed_record(app, step, previous, NOT_RUN + reason))
    app.backend.create(records)


def _join(app: SendingHost, spec: ChordMember, step_id: str, outcome: dict[str, Any]) -> Receipt | None:
    outcome = {**outcome, "id": step_id}  # the member's id: its later attempts can be found from the set
    outcomes = app.backend.join_chord(spec.chord_id, spec.index, spec.size, json.dumps(outcome))
    members = None if outcomes is None else _as_they_stand(app, spec.index, outcome, outcomes)
    callback, final_id = spec.callback, callback_id(spec.chord_id)
    failures = [(spec.index, outcome)] if "failed" in outcome else []
    if members is not None:
        failures = [(index, member) for index, member in enumerate(members) if "failed" in member]
    if failures and not spec.partial:
        index, member = min(failures, key=lambda failure: failure[0])
        where = f"chord member {index + 1} of {spec.size} ({member.get('task')})"
        app.backend.create([_failed_record(app, callback, final_id, f"{NOT_RUN}{where} failed: {member['failed']}")])
        return None
    if members is None:
        return None
    results = [member.get("ok") for member in members]  # a failed member of a partial chord: None
    try:
        [record] = app.new_records(callback.name, [((results, *callback.args), callback.kwargs)],
                                   task_ids=[final_id], **callback.send_options())  # fmt: skip
    except (TypeError, ValueError) as exc:
        app.backend.create([_failed_record(app, callback, final_id, f"not sent: {type(exc).__name__}: {exc}")])
        return None
    # The claimant is this process and member: a retried call after a lost create reply publishes its own
    # claim; another member, or another process, never publishes what this one claimed.
    return send_if_new(app, record, f"{process_claimant()}:member {spec.index}").receipt


def _as_they_stand(
    app: SendingHost, index: int, own: dict[str, Any], outcomes: list[str]
) -> list[dict[str, Any]] | None:
    """Every member's outcome now. The set keeps a member's first outcome, so a failure that a manual
    retry has since turned into a success is read from that member's latest attempt; None while such a
    retry has not finished (the chord is not complete until it joins)."""
    members: list[dict[str, Any]] = [json.loads(text) for text in outcomes]
    members[index] = own  # this call's outcome is the member's latest
    for position, member in enumerate(members):
        member_id = member.get("id")
        if "failed" not in member or position == index or not isinstance(member_id, str):
            continue
        try:
            latest = AsyncResult(app.backend, member_id).latest()
        except TaskNotFound:
            continue
        if latest.status is Status.SUCCESS:
            members[position] = {"ok": latest.result, "task": member.get("task"), "id": member_id}
        elif not latest.status.is_final:
            return None
    return members


def _failed_record(app: SendingHost, step: Signature, task_id: str, error: str) -> TaskRecord:
    task = app.tasks.get(step.name)
    priority = Priority.parse(step.options.get("priority") or (task.priority if task else Priority.HIGH))
    record = new_record(step.name, step.args, step.kwargs, priority=priority, retry=0,
                        primary_key=step.options.get("primary_key"), task_id=task_id)  # fmt: skip
    now = utcnow()
    return record.evolve(status=Status.FAILED, fail_error=error, updated_at=now, history=((Status.FAILED, now),))


def _is_last_attempt(app: SendingHost, record: TaskRecord) -> bool:
    """A failed attempt ends its step only if no retry attempt followed it."""
    original = record if record.is_original else app.backend.get(record.original_task_id)
    return original is None or (original.latest_attempt_id or original.task_id) == record.task_id
