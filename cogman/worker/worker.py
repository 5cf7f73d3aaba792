"""Worker: ``concurrency`` handler threads, each taking its next delivery straight from the consumer.

One thread hop between the socket and the handler: the consumer's I/O thread buffers what the broker
pushes (at most ``concurrency + prefetch`` unacked messages: the broker's prefetch), and a free handler
thread takes the next one, high before low. A handler thread stops taking new deliveries while
``prefetch`` acks are held back (outcomes the backend has not taken yet). Nothing here knows which
broker or backend is behind ``app``: it sees the protocols only.

Stopping: the consumers are cancelled first (nothing new arrives), unstarted messages go back at once,
and running handlers get one overall ``grace_period``. A second SIGINT/SIGTERM stops at once: what was
not acked returns to the broker. A fatal broker error (a queue declared with other arguments, a refused
login) stops the worker and is raised by :meth:`Worker.start`, so the process exits non-zero.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from cogman.brokers.held import HeldDeliveries
from cogman.errors import BrokerAccessRefused, ConsumerStopped, TopologyError
from cogman.priority import Priority
from cogman.sending.host import SendingHost
from cogman.sending.reenqueue import Sweeper, sweeps
from cogman.worker.execution import Executor, Outcome
from cogman.worker.handlers import EventLoopThread

if TYPE_CHECKING:
    from cogman.brokers.base import Consumer

log = logging.getLogger("cogman.worker")

#: How often an idle handler thread wakes to notice a stop request.
RECEIVE_TIMEOUT = 0.2
#: Errors that no reconnect can heal: the worker stops and says why.
FATAL = (TopologyError, BrokerAccessRefused, ConsumerStopped)


def describe_outcomes(outcomes: Mapping[Outcome, int]) -> str:
    """``12 succeeded, 1 failed, 2 retried``, then the rarer outcomes only when they happened."""
    always = [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.RETRIED]
    rare = [o for o in Outcome if o not in always and outcomes.get(o)]
    return ", ".join(f"{outcomes.get(o, 0)} {o.value.replace('_', '-')}" for o in always + rare)


def _nothing() -> None:
    return None


class WorkerHost(SendingHost, Protocol):
    """The app as its workers use it (``cogman.App``): what an executor needs, its name, and the set of
    workers running in this process (which ``app.join()`` and memory://'s ``NoWorker`` trap read)."""

    @property
    def name(self) -> str: ...
    @property
    def running_workers(self) -> set[Worker]: ...


class StopNow(BaseException):
    """Raised in the main thread by a second stop signal: stop without waiting for running handlers."""


class Worker:
    def __init__(
        self,
        app: WorkerHost,
        *,
        concurrency: int | None = None,
        priorities: Iterable[Priority | str] | None = None,
    ) -> None:
        self.app = app
        self.concurrency = concurrency or app.config.concurrency
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        self.prefetch = app.config.prefetch_for(self.concurrency)
        chosen = list(priorities) if priorities is not None else list(Priority)
        self.priorities = tuple(sorted({Priority.parse(p) for p in chosen}, key=lambda p: p.order))
        if not self.priorities:
            raise ValueError("a worker needs at least one priority to consume")
        self.outcomes: Counter[Outcome] = Counter()
        #: The error that stopped the worker on its own (TopologyError, BrokerAccessRefused), if any.
        self.fatal: BaseException | None = None
        self._outcomes_lock = threading.Lock()
        self._running: dict[str, str] = {}  # handler thread name -> what it runs, for the stop log
        self._stopping = threading.Event()
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._consumer: Consumer | None = None
        self._executor: Executor | None = None
        self._loop: EventLoopThread | None = None
        self._sweeper: Sweeper | None = None

    def __repr__(self) -> str:
        families = ",".join(p.value for p in self.priorities)
        return f"<Worker app={self.app.name} concurrency={self.concurrency} queues={families}>"

    # Lifecycle

    def start(
        self,
        block: bool = True,
        signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
        immediate: Iterable[signal.Signals] = (),
    ) -> None:
        """Start consuming. With ``block``, wait for ``stop()``, a signal or a fatal error, then stop
        gracefully (a second of ``signals``, or one of ``immediate``: at once); a fatal error is raised.

        A ``--processes`` child passes ``signals=(SIGTERM, SIGUSR1)``, ``immediate=(SIGUSR2,)``: its
        parent escalates with SIGUSR2, so a SIGTERM sent to the whole process group (systemd, ``timeout``)
        that also reaches the child through its parent counts once."""
        if self._threads:
            raise RuntimeError("this worker was already started; create a new one")
        immediate = tuple(immediate)
        escalate = not immediate
        restore = self._install_signal_handlers((*signals, *immediate), immediate, escalate) if block else _nothing
        try:
            self._launch()
            if not block:
                return
            self._stop_requested.wait()
            self.stop()
        except StopNow:
            self.stop_now()
        finally:
            restore()
        if self.fatal is not None:
            raise self.fatal

    def _launch(self) -> None:
        self._consumer = HeldDeliveries(self.app.broker.consume(self.priorities, self.concurrency + self.prefetch))
        if any(task.is_async for task in self.app.tasks.values()):
            self._loop = EventLoopThread()
        self._executor = Executor(self.app, self._consumer, self._loop, self._stopping)
        self.app.middleware.before("worker_boot", self)
        for index in range(self.concurrency):
            self._spawn(self._handle, f"cogman-handler-{index}")
        self.app.running_workers.add(self)
        if sweeps(self.app.config):
            self._sweeper = Sweeper(self.app.backend, self.app.broker, self.app.config)
            self.app.client.sweeper = self._sweeper
            self._sweeper.start()
        log.info("%r started", self)

    def wait(self, timeout: float | None = None) -> bool:
        """True once a stop was requested (``stop()``, a signal, a fatal error)."""
        return self._stop_requested.wait(timeout)

    def stop(self, grace_period: float | None = None) -> None:
        """Stop taking messages, give back the unstarted ones, let running handlers finish.

        Handlers still running after ``grace_period`` (default ``config.grace_period``, one deadline for
        all) are left to finish on their own; their messages are not acked, so the broker redelivers them.
        """
        if self._stopping.is_set():
            self._stopped.wait()
            return
        grace = self.app.config.grace_period if grace_period is None else grace_period
        deadline = time.monotonic() + grace
        self._begin_stop()
        running = self._describe_running()
        if running:
            log.warning(  # at WARNING, as Celery's "Warm shutdown": an operator must see it at the CLI's default
                "stopping: waiting up to %.0f s for %d running task(s): %s; a second SIGINT/SIGTERM stops at once",
                grace,
                len(running),
                ", ".join(running[:10]) + (" ..." if len(running) > 10 else ""),
            )
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning(
                "%d handler(s) still running after %.1f s grace; their messages will be redelivered", len(stuck), grace
            )
        self._finish()

    def stop_now(self) -> None:
        """Stop at once: running handlers are abandoned, their messages return to the broker unacked."""
        running = self._describe_running()
        if running:
            log.warning(
                "stopping at once: %d running task(s) abandoned; their messages return to the broker: %s",
                len(running),
                ", ".join(running[:10]),
            )
        else:
            log.warning("stopping at once; no task was running")
        if not self._stopping.is_set():
            self._begin_stop()
        self._finish()

    @property
    def is_running(self) -> bool:
        return bool(self._threads) and not self._stopping.is_set()

    def _begin_stop(self) -> None:
        self._stopping.set()
        self._stop_requested.set()
        if self._sweeper is not None:
            self._sweeper.stop()
        if self._consumer is not None:
            try:
                self._consumer.cancel()  # nothing new arrives; what was buffered goes back at once
            except Exception:
                log.exception("could not cancel the consumers; closing will give the messages back")

    def _finish(self) -> None:
        if self._stopped.is_set():
            return
        self.app.running_workers.discard(self)
        if self._consumer is not None:
            self._consumer.close()
        if self._loop is not None:
            self._loop.stop()
        self.app.middleware.after("worker_shutdown", self)
        self._stopped.set()
        log.info("%r stopped: %s", self, describe_outcomes(self.outcomes))

    # Threads

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _handle(self) -> None:
        """Top level of a handler thread: it lives until the worker stops, whatever a task does; a fatal
        broker error stops the worker, loudly."""
        while not self._stopping.is_set():
            try:
                self._handle_one()
            except FATAL as exc:
                if self.fatal is None:
                    log.critical("worker stopping: %s", exc)
                    self.fatal = exc
                self._stop_requested.set()
                return
            except BaseException:
                log.critical("a handler thread hit an unexpected error; it carries on", exc_info=True)
                self._stopping.wait(RECEIVE_TIMEOUT)

    def _handle_one(self) -> None:
        assert self._consumer is not None and self._executor is not None
        self._executor.wait_for_room(self.prefetch, RECEIVE_TIMEOUT)
        if self._executor.held >= self.prefetch:
            return
        delivery = self._consumer.receive(RECEIVE_TIMEOUT)
        if delivery is None:
            return
        if self._stopping.is_set():
            self._consumer.requeue(delivery)
            return
        if not self._consumer.is_current(delivery):
            log.info("dropping a delivery from %s of a lost connection; RabbitMQ redelivers it", delivery.queue)
            return
        name = threading.current_thread().name
        self._running[name] = f"{delivery.headers.get('TaskName', '?')}[{delivery.headers.get('TaskID', '?')}]"
        try:
            outcome = self._executor.execute(delivery)
        finally:
            self._running.pop(name, None)
        with self._outcomes_lock:
            self.outcomes[outcome] += 1

    def _describe_running(self) -> list[str]:
        return list(self._running.values())

    def _install_signal_handlers(
        self, signals: Iterable[signal.Signals], immediate: tuple[signal.Signals, ...], escalate: bool
    ) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return _nothing

        def on_signal(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if signum in immediate or (escalate and self._stop_requested.is_set()):
                log.warning("received %s; stopping at once", name)
                raise StopNow(name)
            if self._stop_requested.is_set():
                log.info("received %s; already stopping gracefully", name)
                return
            hint = " (send it again to stop at once)" if escalate else ""
            log.warning("received %s; stopping gracefully%s", name, hint)
            self._stop_requested.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in signals}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
