"""Worker: one fetch thread feeding a local priority queue, and ``concurrency`` handler threads.

The fetch thread holds at most ``prefetch`` unstarted messages; handler threads take the high ones
first. Nothing here knows which broker or backend is behind ``app``: it sees the protocols only.
"""

from __future__ import annotations

import itertools
import logging
import queue
import signal
import threading
from collections import Counter
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

from cogman.execution import EventLoopThread, Outcome, execute
from cogman.priority import Priority

if TYPE_CHECKING:
    from cogman.app import App
    from cogman.brokers.base import Consumer, Delivery

log = logging.getLogger("cogman.worker")

#: How often an idle fetch thread wakes to notice a stop request.
RECEIVE_TIMEOUT = 0.2
_STOP_ORDER = -1  # sorts before every priority, so handler threads see the stop first


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
        self._outcomes_lock = threading.Lock()
        self._local: queue.PriorityQueue[tuple[int, int, Delivery | None]] = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._room = threading.Condition()
        self._unstarted = 0
        self._stopping = threading.Event()
        self._stop_requested = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._consumer: Consumer | None = None
        self._loop: EventLoopThread | None = None

    def __repr__(self) -> str:
        families = ",".join(p.value for p in self.priorities)
        return f"<Worker app={self.app.name} concurrency={self.concurrency} queues={families}>"

    # Lifecycle

    def start(self, block: bool = True) -> None:
        """Start consuming. With ``block``, wait for ``stop()``, SIGINT or SIGTERM, then stop gracefully."""
        if self._threads:
            raise RuntimeError("this worker was already started; create a new one")
        self._consumer = self.app.broker.consume(self.priorities, prefetch=self.concurrency + self.prefetch)
        if any(task.is_async for task in self.app.tasks.values()):
            self._loop = EventLoopThread()
        self.app.middleware.before("worker_boot", self)
        self._spawn(self._fetch, "cogman-fetch")
        for index in range(self.concurrency):
            self._spawn(self._handle, f"cogman-handler-{index}")
        restore = self._install_signal_handlers() if block else None
        log.info("%r started", self)  # after the handlers: a SIGTERM right after this line stops gracefully
        if restore is not None:
            try:
                self._stop_requested.wait()
            finally:
                restore()
                self.stop()

    def stop(self, grace_period: float | None = None) -> None:
        """Stop taking messages, give back the unstarted ones, let running handlers finish.

        Handlers still running after ``grace_period`` (default ``config.grace_period``) are left to
        finish on their own; their messages are not acked, so the broker redelivers them.
        """
        if self._stopping.is_set():
            self._stopped.wait()
            return
        self._stopping.set()
        self._stop_requested.set()
        grace = self.app.config.grace_period if grace_period is None else grace_period
        self._threads[0].join()  # the fetch thread: no new deliveries after this
        self._give_back_unstarted()
        for _ in range(self.concurrency):
            self._local.put((_STOP_ORDER, next(self._sequence), None))
        for thread in self._threads[1:]:
            thread.join(timeout=grace)
        stuck = [t.name for t in self._threads[1:] if t.is_alive()]
        if stuck:
            log.warning(
                "%d handler(s) still running after %.1f s grace; their messages will be redelivered", len(stuck), grace
            )
        if self._consumer is not None:
            self._consumer.close()
        if self._loop is not None:
            self._loop.stop()
        self.app.middleware.after("worker_shutdown", self)
        self._stopped.set()
        log.info("%r stopped: %s", self, dict(self.outcomes))

    @property
    def is_running(self) -> bool:
        return bool(self._threads) and not self._stopping.is_set()

    # Threads

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _fetch(self) -> None:
        assert self._consumer is not None
        while not self._stopping.is_set():
            with self._room:
                while self._unstarted >= self.prefetch and not self._stopping.is_set():
                    self._room.wait(RECEIVE_TIMEOUT)
            if self._stopping.is_set():
                return
            try:
                delivery = self._consumer.receive(RECEIVE_TIMEOUT)
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
        assert self._consumer is not None
        takes_high = Priority.HIGH in self.priorities
        while True:
            order, sequence, delivery = self._local.get()
            if delivery is None:
                return
            if takes_high and delivery.priority is Priority.LOW and not self._stopping.is_set():
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
                continue
            try:
                outcome = execute(self.app, self._consumer, delivery, self._loop)
            except Exception:
                log.exception("could not record the outcome of a delivery from %s; giving it back", delivery.queue)
                self._consumer.requeue(delivery)
                continue
            with self._outcomes_lock:
                self.outcomes[outcome] += 1

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

    def _install_signal_handlers(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def request_stop(signum: int, frame: FrameType | None) -> None:
            log.info("received %s; stopping gracefully", signal.Signals(signum).name)
            self._stop_requested.set()

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
