"""Listing Go-format tasks beside cogman's (issue 22): a query's page with the Go records the backend
lists (``GoRecords.recent``) merged in, newest first, as cogman's readers show them.

Go keeps no index, so the Go records are filtered here, in process: fine for the Go-format tasks of a
migration (what cogman created or started within the TTL), not for millions of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from cogman.backends.base import TaskPage, TaskQuery
from cogman.gowire.store import GoRecords


def with_go_records(query: TaskQuery, cogman_query: Callable[[TaskQuery], TaskPage], records: GoRecords) -> TaskPage:
    """``cogman_query(query)``, with the matching Go records merged into the page and the total."""
    matching = [task for task in (record.to_task_record() for record in records.recent()) if query.matches(task)]
    if not matching:
        return cogman_query(query)
    head = cogman_query(replace(query, skip=0, limit=query.skip + query.limit))
    merged = sorted([*head.records, *matching], key=lambda task: task.created_at, reverse=True)
    return TaskPage(records=merged[query.skip : query.skip + query.limit], total=head.total + len(matching))
