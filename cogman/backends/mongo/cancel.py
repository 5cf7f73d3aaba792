"""Cancel on MongoDB (issue 23): conditional single-document updates, no transaction.

The cancel first sets ``_cancelled`` on the chain's original and reads back its ``latest_attempt_id``
in the same update; ``spawn_retry`` (backend.py) only moves an original without that mark. So a retry
spawned while a cancel runs was either spawned before the mark (the pointer read back names it, and it
is cancelled: created already, or its status kept early until its insert applies it) or is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument

from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.outage import WriteBuffer
    from cogman.record import TaskRecord

#: The filter ``spawn_retry`` adds: the chain was not cancelled.
NOT_CANCELLED: dict[str, Any] = {"_cancelled": {"$exists": False}}


class MongoCancel:
    """The cancel primitives of :class:`~cogman.backends.mongo.backend.MongoBackend`."""

    if TYPE_CHECKING:
        collection: Any
        buffer: WriteBuffer

        def transition(self, task_id: str, status: Status) -> TaskRecord | None: ...

    def cancel(self, task_id: str) -> Status | None:
        what = f"cancel task {task_id}"
        find = self.collection.find_one
        doc = self.buffer.call(lambda: find({"task_id": task_id}, {"original_task_id": True}), what)
        if doc is None:
            return None
        original_id = doc.get("original_task_id") or task_id
        original = self.buffer.call(lambda: find({"task_id": original_id}, {"latest_attempt_id": True}), what)
        latest_id = (original or {}).get("latest_attempt_id") or original_id
        latest = self.buffer.call(lambda: find({"task_id": latest_id}, {"status": True}), what)
        before = Status(latest["status"]) if latest else Status.RETRY
        if before.is_final:
            return before
        marked = self.buffer.call(
            lambda: self.collection.find_one_and_update(
                {"task_id": original_id},
                {"$set": {"_cancelled": True}},
                projection={"latest_attempt_id": True},
                return_document=ReturnDocument.AFTER,
            ),
            what,
        )
        self.transition((marked or {}).get("latest_attempt_id") or latest_id, Status.CANCELLED)
        return before

    def cancelled_among(self, task_ids: Sequence[str]) -> list[str]:
        if not task_ids:
            return []
        ids = list(task_ids)
        docs = self.buffer.call(
            lambda: list(
                self.collection.find({"task_id": {"$in": ids}, "status": Status.CANCELLED.value}, {"task_id": True})
            ),
            "read which running tasks are cancelled",
        )
        return [doc["task_id"] for doc in docs]
