"""Worker: one fetch thread feeding a local priority queue, and ``concurrency`` handler threads.

The fetch thread holds at most ``prefetch`` unstarted messages, and stops fetching while ``prefetch``
acks are held back (outcomes the backend has not taken yet); handler threads take the high ones first.
Nothing here knows which broker or backend is behind ``app``: it sees the protocols only.

Stopping: the consumers are cancelled first (nothing new arrives), unstarted messages go back at once,
and running handlers get one overall ``grace_period``. A second SIGINT/SIGTERM stops at once: what was
not acked returns to the broker. A fatal broker error (a queue declared with other arguments, a refused
login) stops the worker and is raised by :meth:`Worker.start`, so the process exits non-zero.
"""

from __future__ import annotations

import itertools
import logging
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

from cogman.errors import BrokerAccessRefused, TopologyError
from cogman.execution import Executor, Outcome
from cogman.handlers import EventLoopThread
from cogman.priority import Priority
from cogman.reenqueue import Sweeper, sweeps

if TYPE_CHECKING:
    from cogman.app import App
    from cogman.brokers.base import Consumer, Delivery

log = logging.getLogger("cogman.worker")

#: How often an idle fetch thread wakes to notice a stop request.
RECEIVE_TIMEOUT = 0.2
_STOP_ORDER = -1  # sorts before every priority, so handler threads see the stop first
#: Errors that no reconnect can heal: the worker stops and says why.
FATAL = (TopologyError, BrokerAccessRefused)


class StopNow(BaseException):
    """Raised in the main thread by a second stop signal: stop without waiting for running handlers."""


class Worker:
    def __init__(
        self,
        app: App,
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
        self._local: queue.PriorityQueue[tuple[int, int, Delivery | None]] = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._room = threading.Condition()
        self._unstarted = 0
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

    def start(self, block: bool = True, signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM)) -> None:
        """Start consuming. With ``block``, wait for ``stop()``, a signal or a fatal error, then stop
        gracefully (a second signal: at once); a fatal error is raised."""
        if self._threads:
            raise RuntimeError("this worker was already started; create a new one")
        self._consumer = self.app.broker.consume(self.priorities, prefetch=self.concurrency + self.prefetch)
        if any(task.is_async for task in self.app.tasks.values()):
            self._loop = EventLoopThread()
        self._executor = Executor(self.app, self._consumer, self._loop, self._stopping)
        self.app.middleware.before("worker_boot", self)
        self._spawn(self._fetch, "cogman-fetch")
        for index in range(self.concurrency):
            self._spawn(self._handle, f"cogman-handler-{index}")
        if sweeps(self.app.config):
            self._sweeper = Sweeper(self.app.backend, self.app.broker, self.app.config)
            self.app.client.sweeper = self._sweeper
            self._sweeper.start()
        log.info("%r started", self)
        if not block:
            return
        restore = self._install_signal_handlers(signals)
        try:
            self._stop_requested.wait()
            self.stop()
        except StopNow:
            self.stop_now()
        finally:
            restore()
        if self.fatal is not None:
            raise self.fatal

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
            log.info(
                "stopping: waiting up to %.0f s for %d running task(s): %s; a second SIGINT/SIGTERM stops at once",
                grace,
                len(running),
                ", ".join(running[:10]) + (" ..." if len(running) > 10 else ""),
            )
        for thread in self._threads[1:]:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads[1:] if t.is_alive()]
        if stuck:
            log.warning(
                "%d handler(s) still running after %.1f s grace; their messages will be redelivered", len(stuck), grace
            )
        self._finish()

    def stop_now(self) -> None:
        """Stop at once: running handlers are abandoned, their messages return to the broker unacked."""
        running = self._describe_running()
        log.warning(
            "stopping at once: %d running task(s) abandoned; their messages return to the broker: %s",
            len(running),
            ", ".join(running[:10]),
        )
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
                self._consumer.cancel()
            except Exception:
                log.exception("could not cancel the consumers; closing will give the messages back")
        self._threads[0].join()  # the fetch thread: no new deliveries after this
        self._give_back_unstarted()
        for _ in range(self.concurrency):
            self._local.put((_STOP_ORDER, next(self._sequence), None))

    def _finish(self) -> None:
        if self._stopped.is_set():
            return
        if self._consumer is not None:
            self._consumer.close()
        if self._loop is not None:
            self._loop.stop()
        self.app.middleware.after("worker_shutdown", self)
        self._stopped.set()
        log.info("%r stopped: %s", self, dict(self.outcomes))

    # Threads

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _fetch(self) -> None:
        """Top level of the fetch thread: a fatal broker error stops the worker, loudly."""
        try:
            self._fetch_loop()
        except FATAL as exc:
            log.critical("worker stopping: %s", exc)
            self.fatal = exc
            self._stop_requested.set()
        except BaseException as exc:
            log.critical("the fetch thread crashed; the worker stops", exc_info=True)
            self.fatal = exc
            self._stop_requested.set()

    def _fetch_loop(self) -> None:
        assert self._consumer is not None and self._executor is not None
        while not self._stopping.is_set():
            with self._room:
                while self._unstarted >= self.prefetch and not self._stopping.is_set():
                    self._room.wait(RECEIVE_TIMEOUT)
            self._executor.wait_for_room(self.prefetch, RECEIVE_TIMEOUT)
            if self._stopping.is_set():
                return
            if self._executor.held >= self.prefetch:
                continue
            try:
                delivery = self._consumer.receive(RECEIVE_TIMEOUT)
            except FATAL:
                raise
            except Exception:
                log.exception("receiving from the broker failed; retrying")
                self._stopping.wait(RECEIVE_TIMEOUT)
                continue
            if delivery is None:
                continue
            with self._room:
                self._unstarted += 1
            self._local.put((delivery.priority.order, next(self._sequence), delivery))

    def _handle(self) -> None:
        """Top level of a handler thread: it lives until told to stop, whatever a task does."""
        while True:
            try:
                if not self._handle_one():
                    return
            except BaseException:
                log.critical("a handler thread hit an unexpected error; it carries on", exc_info=True)

    def _handle_one(self) -> bool:
        assert self._consumer is not None and self._executor is not None
        order, sequence, delivery = self._local.get()
        if delivery is None:
            return False
        if Priority.HIGH in self.priorities and delivery.priority is Priority.LOW and not self._stopping.is_set():
            high = self._consumer.receive(0, (Priority.HIGH,))
            if high is not None:  # a high task waits outside our full local queue: it goes first
                self._local.put((order, sequence, delivery))
                delivery = high
            else:
                self._took_one()
        else:
            self._took_one()
        if self._stopping.is_set():
            self._consumer.requeue(delivery)
            return True
        if not self._consumer.is_current(delivery):
            log.info("dropping a delivery from %s of a lost connection; RabbitMQ redelivers it", delivery.queue)
            return True
        name = threading.current_thread().name
        self._running[name] = f"{delivery.headers.get('TaskName', '?')}[{delivery.headers.get('TaskID', '?')}]"
        try:
            outcome = self._executor.execute(delivery)
        finally:
            self._running.pop(name, None)
        with self._outcomes_lock:
            self.outcomes[outcome] += 1
        return True

    def _took_one(self) -> None:
        with self._room:
            self._unstarted -= 1
            self._room.notify()

    def _give_back_unstarted(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                _, _, delivery = self._local.get_nowait()
            except queue.Empty:
                return
            if delivery is not None:
                with self._room:
                    self._unstarted -= 1
                self._consumer.requeue(delivery)

    def _describe_running(self) -> list[str]:
        return list(self._running.values())

    def _install_signal_handlers(self, signals: Iterable[signal.Signals]) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._stop_requested.is_set():
                log.warning("received %s again; stopping at once", name)
                raise StopNow(name)
            log.info("received %s; stopping gracefully (send it again to stop at once)", name)
            self._stop_requested.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in signals}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
