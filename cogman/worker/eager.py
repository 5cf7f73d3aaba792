"""Eager mode, for unit tests of your own tasks: ``App(..., eager=True)`` or ``COGMAN_EAGER=1``.

Each send runs to completion in the caller's thread before ``.delay()`` returns, through the worker's
own :class:`~cogman.execution.Executor` on a private in-process broker: the same argument checks, the
same retries (run inline too), the same statuses written to the backend (``initiated``, ``queued``,
``in_progress``, then ``success`` or ``failed``), so a test sees what a real worker would record.
This is Celery's ``task_always_eager``, without its known gap of skipping the result backend.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from cogman.brokers.memory import MemoryBroker
from cogman.priority import Priority
from cogman.worker.execution import Executor
from cogman.worker.handlers import EventLoopThread

if TYPE_CHECKING:
    from cogman.sending.host import SendingHost


class EagerRunner:
    def __init__(self, app: SendingHost) -> None:
        broker = app.broker
        if not isinstance(broker, MemoryBroker):
            raise TypeError("eager mode runs on the app's in-process broker")
        self.broker = broker
        self.consumer = broker.consume(tuple(Priority), prefetch=1)
        self.loop = EventLoopThread() if any(task.is_async for task in app.tasks.values()) else None
        self.executor = Executor(app, self.consumer, self.loop, threading.Event())

    def drain(self) -> None:
        """Run every waiting delivery (and the retries they spawn) here and now; a delayed one (a
        ``countdown``, a retry's backoff) once due, so the caller waits for it as a worker would."""
        while True:
            delivery = self.consumer.receive(0)
            if delivery is None:
                due = self.broker.next_due()
                if due is None:
                    return
                delivery = self.consumer.receive(due)
            if delivery is not None:
                self.executor.execute(delivery)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.stop()
