"""Admission: may this delivery of a limited task start now? (docs/control.md)

Before a task with ``rate_limit`` or ``max_concurrency`` starts, the worker asks the backend's shared
store (``Backend.limits()``): first for a concurrency slot (a lease, given back if the rate then says
no), then for a start in the rate's window. A task over a limit is never held here: a copy of its
message goes back to the broker's delay for the time the limiter computed (a short jittered wait for a
slot), and the delivery is acked once that copy is confirmed, as for an early delivery
(``Executor._settle_untimely``). The task's record stays ``queued`` and was not started, so waiting
counts no start toward ``max_redeliveries``; the store keeps a note of why it waits (the API's
``meta.waiting``). A copy that cannot be published gives the delivery back, counted.

The slots a worker holds are renewed by ``LeaseRenewer`` while their tasks run and freed once the
outcome is recorded; a worker killed with SIGKILL stops renewing, so its slots free themselves within
``Config.concurrency_lease``.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cogman.delays import seconds_until
from cogman.status import UNCONFIRMED, Status

if TYPE_CHECKING:
    from cogman.backends.base import Backend
    from cogman.brokers.base import Broker, Delivery
    from cogman.limits.store import LimitStore
    from cogman.message import Message
    from cogman.record import TaskRecord
    from cogman.task import Task
    from cogman.worker.settling import Settler

log = logging.getLogger("cogman.worker")

#: Seconds a task waits for a concurrency slot before it asks again, drawn at random in this range
#: (the delay ladder rounds up to whole seconds), so waiting tasks do not all come back at once.
SLOT_WAIT = (1.0, 3.0)
#: How long the note of why a task waits outlives the wait (the copy may come back a little late).
NOTE_MARGIN = 60.0


def _nothing() -> None:
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Admitted:
    """``outcome`` None: run the task, then ``release()`` once its outcome is recorded. Else the task
    does not run now: ``"delayed"`` (a copy waits in the broker) or ``"requeued"`` (given back)."""

    outcome: str | None = None
    release: Callable[[], None] = _nothing


RUN = Admitted()


class Admission:
    def __init__(self, backend: Backend, broker: Broker, settler: Settler, lease: float) -> None:
        self.backend = backend
        self.broker = broker
        self.settler = settler
        self.lease = lease
        self._until_recorded = settler.until_recorded
        self.renewer = LeaseRenewer(backend, lease)

    def admit(self, delivery: Delivery, message: Message, task: Task[Any, Any]) -> Admitted:
        """Whether ``message`` may start now; raises PoisonMessage if a key function cannot place it.
        A delivery that is early or expired is left to the executor, which never starts it."""
        limits = task.limits
        if limits is None or _untimely(message):
            return RUN
        scopes = limits.scopes(message.task_id, message.args, message.kwargs or {})
        store = self.backend.limits()
        release = _nothing
        if scopes.concurrency is not None and limits.max_concurrency is not None:
            scope, most, holder = scopes.concurrency, limits.max_concurrency, f"{message.task_id}:{uuid.uuid4().hex}"
            taken = self._until_recorded(
                lambda: store.acquire_slot(scope, holder, most, self.lease), f"take a slot of {scope}"
            )
            if not taken:
                wait = random.uniform(*SLOT_WAIT)
                return self._wait(store, delivery, message, wait, f"max_concurrency={most} reached for {scope}")
            self.renewer.hold(scope, holder)
            release = self._releaser(store, scope, holder)
        if scopes.rate is not None and limits.rate is not None:
            scope, rate, token = scopes.rate, limits.rate, uuid.uuid4().hex
            try:
                wait = self._until_recorded(lambda: store.take_start(scope, rate, token), f"take a start of {scope}")
            except BaseException:
                release()
                raise
            if wait > 0:
                release()
                wait += random.uniform(0, rate.period / rate.count)
                return self._wait(store, delivery, message, wait, f"rate_limit {rate} reached for {scope}")
        return Admitted(None, release)

    def _wait(self, store: LimitStore, delivery: Delivery, message: Message, wait: float, why: str) -> Admitted:
        reason = f"{why}; tries again in {wait:.1f} s"
        self._until_recorded(
            lambda: store.note_waiting(message.task_id, reason, wait + NOTE_MARGIN),
            f"note why task {message.task_id} waits",
        )
        log.info("task %s[%s] waits: %s", message.name, message.task_id, reason)
        later = dataclasses.replace(message, eta=datetime.now(UTC) + timedelta(seconds=wait), _encoded=None)

        waiting = self.settler.wait_in_broker(
            self.broker, delivery, later, "a task over its limit could not wait in the broker"
        )
        return Admitted("delayed" if waiting else "requeued")

    def _releaser(self, store: LimitStore, scope: str, holder: str) -> Callable[[], None]:
        def release() -> None:
            """Never raises: the outcome is settled already; a slot not freed frees itself with its lease."""
            self.renewer.drop(scope, holder)
            try:
                store.release_slot(scope, holder)
            except Exception as exc:
                log.warning("could not free a slot of %s (%s); it frees itself within %g s", scope, exc, self.lease)

        return release


class LeaseRenewer:
    """Renews the slots this worker holds every third of the lease, from one daemon thread that runs
    while any is held. Its loop outlives every error (logged): a renewal it misses is made up at the next
    one, and a lease that expired anyway is logged, since its slot may then be held twice."""

    def __init__(self, backend: Backend, lease: float) -> None:
        self.backend = backend
        self.lease = lease
        self._held: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def hold(self, scope: str, holder: str) -> None:
        with self._lock:
            self._held.add((scope, holder))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cogman-lease-renewer", daemon=True)
                self._thread.start()

    def drop(self, scope: str, holder: str) -> None:
        with self._lock:
            self._held.discard((scope, holder))

    def _run(self) -> None:
        while True:
            self._wake.wait(self.lease / 3)
            with self._lock:
                held = sorted(self._held)
                if not held:
                    self._thread = None
                    return
            try:
                for scope, holder in self.backend.limits().renew_slots(held, self.lease):
                    log.error("the lease of a slot of %s (%s) had expired before its renewal", scope, holder)
            except BaseException:
                log.exception("could not renew %d concurrency slot(s); trying again", len(held))


def waiting_note(backend: Backend, record: TaskRecord) -> str | None:
    """Why a task that has not started waits (a rate limit, a full concurrency), for the API; None once
    it started, or when it does not wait on a limit."""
    if record.status not in (*UNCONFIRMED, Status.QUEUED):
        return None
    return backend.limits().waiting(record.task_id)


def _untimely(message: Message) -> bool:
    """Early (the executor sends it back to its ``eta``) or expired (recorded failed, never run)."""
    now = datetime.now(UTC).timestamp()
    early = message.eta is not None and seconds_until(message.eta, now) > 0
    return early or (message.expires is not None and seconds_until(message.expires, now) <= 0)
