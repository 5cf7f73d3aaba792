"""Operator actions on Go-format tasks (issue 22, docs/go-interop.md): a manual retry made the Go way,
and forgetting a Go-format chain's records.

A manual retry (``cogman retry``, ``POST /retry``) of a Go-format task does what Go Cogman's REST
``/retry`` does (records-retry.json, ``rest_retry``): add the requested retries to the chain original's
``Retry``, take one of them for a new attempt (status ``retry``, ``Retry`` 0, the same
``OriginalTaskID``, name, payload and priority, no ``PrimaryKey``), and publish the raw body with the
two headers at once. Unlike Go it keeps cogman's rule (only a chain whose latest attempt failed, unless
``force``), each change is one atomic step, and the publish waits for RabbitMQ's confirm, since no
re-enqueue sweep reads Go records: a publish refused or not confirmed within ``request_timeout`` records
the attempt ``failed`` with the reason and raises, so the chain can be retried again (a worker skips the
message if the outbox publishes it later: its record is final). The attempt's id derives from the latest attempt's
(``go_retry_id``, as a cogman worker's retries), so ``AsyncResult`` and ``cogman inspect`` follow it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cogman.errors import BrokerUnavailable, PublishError, TaskNotFound
from cogman.gowire.record import go_retry_id
from cogman.sending.go_send import message_for_record
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.app import App
    from cogman.backends.base import Backend
    from cogman.message import Message
    from cogman.record import TaskRecord


def is_go(record: TaskRecord) -> bool:
    """Whether ``record`` is a Go record as cogman's readers show it (``GoRecord.to_task_record``)."""
    return isinstance(record.payload, dict) and record.payload.get("wire") == "go"


def retry_go_task(app: App, latest: TaskRecord, original_id: str, retries: int) -> TaskRecord:
    """The manual retry of a Go-format chain whose latest attempt is ``latest`` (checked by the caller,
    ``cogman.admin.actions.retry_task``); the new attempt's record. Raises TaskNotFound, RetryBudgetRace,
    and PublishError / BrokerUnavailable when RabbitMQ did not take the message."""
    from cogman.admin.actions import RetryBudgetRace

    store = app.backend.go_records()
    failed = store.get(latest.task_id)
    if failed is None:
        raise TaskNotFound(latest.task_id)
    attempt = failed.retry_attempt(go_retry_id(failed.task_id))
    if store.get(attempt.task_id) is not None:
        raise RetryBudgetRace(f"task {latest.task_id} was retried as {attempt.task_id} meanwhile; try again")
    if store.add_retries(original_id, retries) is None:
        raise TaskNotFound(original_id)
    if store.take_retry(original_id) is None:
        raise RetryBudgetRace(f"the retries added to task {original_id} were spent by another retry; try again")
    if not store.create(attempt):
        raise RetryBudgetRace(f"task {latest.task_id} was retried as {attempt.task_id} meanwhile; try again")
    message = message_for_record(attempt)
    with app.middleware.sending(message.name, [message]):
        app.middleware.before("before_send", message)
        try:
            _publish_confirmed(app, message)
        except (BrokerUnavailable, PublishError) as exc:
            store.update(attempt.task_id, Status.FAILED, fail_error=f"manual retry not published: {exc}")
            raise
        app.middleware.after("after_send", message)
    return attempt.to_task_record()


def _publish_confirmed(app: App, message: Message) -> None:
    """Publish and wait for RabbitMQ's confirm (``request_timeout``): a message parked in the outbox of
    a ``cogman retry`` process that then exits would be lost, and nothing else publishes it again."""
    timeout = app.config.request_timeout
    if not app.broker.publish([message], wait=True).wait(timeout):
        raise BrokerUnavailable(f"RabbitMQ did not confirm the message within request_timeout={timeout} s")


def forget_go(backend: Backend, attempts: list[TaskRecord]) -> list[TaskRecord]:
    """Delete the Go records among a chain's ``attempts`` (``AsyncResult.forget``); the others, cogman's,
    are returned for ``Backend.delete``."""
    go = [record.task_id for record in attempts if is_go(record)]
    if go:
        backend.go_records().delete(go)
    return [record for record in attempts if not is_go(record)]
