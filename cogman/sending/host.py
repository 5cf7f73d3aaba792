"""``SendingHost``: the app as the code that records and publishes attempts on its behalf sees it.

Claims, workflow steps and the worker's executor send records the app prepared, through its client, and
tell its middleware; they need those parts and nothing else of the app. Declaring them here, below every
one of those packages, is what lets none of them import ``cogman.app`` (which imports them all).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from cogman.signature import SendingApp

if TYPE_CHECKING:
    from cogman.brokers.base import Broker
    from cogman.config import Config
    from cogman.middleware.base import MiddlewareStack
    from cogman.record import TaskRecord
    from cogman.sending.client import Client
    from cogman.task import Task


class SentIds(Protocol):
    """Where a memory:// app notes what it sent, for ``app.join()`` (``cogman.worker.inprocess.Unjoined``)."""

    def append(self, task_id: str) -> None: ...
    def extend(self, task_ids: Iterable[str]) -> None: ...


class SendingHost(SendingApp, Protocol):
    @property
    def config(self) -> Config: ...
    @property
    def broker(self) -> Broker: ...
    @property
    def client(self) -> Client: ...
    @property
    def middleware(self) -> MiddlewareStack: ...
    @property
    def tasks(self) -> Mapping[str, Task[Any, Any]]: ...
    @property
    def unjoined(self) -> SentIds: ...
    def new_records(
        self, name: str, calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], **options: Any
    ) -> list[TaskRecord]: ...
