"""The hard time limit of ``--processes``: what a task's ``time_limit`` cannot interrupt, its supervisor ends.

The soft limit (cogman/worker/limits.py) raises in Python code only; a blocking call in C (``time.sleep``, a
socket read, a query, a regular expression holding the GIL) runs on. As Celery's prefork pool does, the
supervisor then ends the worker process:

* each child reports through its own pipe when a task with a ``time_limit`` starts (``before_execute``)
  and when its handler ends (limits.py tells it; ``after_outcome`` too, should a report be missed);
* the supervisor's :class:`Overseer` times them. One still running ``hard_time_limit_grace`` seconds past
  its limit: the child is frozen (SIGSTOP: it can neither finish that task nor write or ack anything
  meanwhile), and unless what it sent by then says the handler ended, the attempt is recorded as the
  worker records a failure (the retry first, if the policy and the budget allow, then ``failed``). Once
  that is durable and the retry confirmed, the child is killed (SIGKILL) and the supervisor starts another.
* RabbitMQ redelivers what the child held unacked: the overrun message finds its record final and is
  acked unrun; the child's other running tasks run again elsewhere, as after any crash (at-least-once).
"""

from __future__ import annotations

import logging
import multiprocessing.connection
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cogman.backoff import decide
from cogman.errors import HardTimeLimitExceeded
from cogman.message import Message
from cogman.middleware.base import Middleware
from cogman.status import Status
from cogman.worker import limits
from cogman.worker.settling import through_outage

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from cogman.sending.host import SendingHost

log = logging.getLogger("cogman.processes")

#: Longest the overseer sleeps before it looks at new children.
POLL = 0.5


class Reporter(Middleware):
    """A child's side: tells the supervisor which time-limited task each handler thread runs, and when its
    handler ends. Tasks without a ``time_limit`` cost nothing."""

    def __init__(self, app: SendingHost, connection: Connection) -> None:
        self.app = app
        self._connection = connection
        self._lock = threading.Lock()  # one report at a time, in order
        self._timed: dict[int, str] = {}  # handler thread id -> the task it runs
        self._broken = False

    def install(self) -> None:
        self.app.middleware.middleware.append(self)
        limits.report_ends_to(self.ended)

    def before_execute(self, message: Message) -> None:
        task = self.app.tasks.get(message.name)
        if task is None or task.time_limit is None:
            return
        thread = threading.get_ident()
        with self._lock:
            self._timed[thread] = message.task_id
            self._send(("start", thread, message.task_id, task.time_limit))

    def ended(self, thread: int) -> None:
        with self._lock:
            if self._timed.pop(thread, None) is not None:
                self._send(("end", thread))

    def after_outcome(self, message: Message | None, outcome: str) -> None:
        self.ended(threading.get_ident())

    def _send(self, report: tuple[Any, ...]) -> None:
        try:
            self._connection.send(report)
        except (OSError, ValueError) as exc:  # the supervisor is gone: this process is stopping anyway
            if not self._broken:
                self._broken = True
                log.error("cannot report to the supervisor (%s): no hard time limit in this process", exc)


@dataclass(eq=False)
class _Timing:
    thread: int
    task_id: str
    limit: float
    started: float
    deadline: float


@dataclass(eq=False)
class _Child:
    process: BaseProcess
    reader: Connection
    timed: dict[int, _Timing] = field(default_factory=dict)
    ending: bool = False  # an ender thread owns it (and reads its pipe) now
    gone: bool = False  # its pipe is closed: the child died, the supervisor sees it too


class GiveUp(Exception):
    """The supervisor is stopping while the backend is away: the child is let go on as it is."""


class Overseer:
    """The supervisor's side: one thread reading every child's reports and timing their tasks, and one
    short-lived thread per child that overran (recording can wait out a backend outage)."""

    def __init__(self, app: SendingHost, grace: float) -> None:
        self.app = app
        self.grace = grace
        self.stop = threading.Event()  # set by close(): the supervisor is stopping
        self._lock = threading.Lock()
        self._children: dict[int, _Child] = {}
        self._ended: set[int] = set()  # pids killed here, so the supervisor replaces them
        self._forgotten: list[Connection] = []  # pipes of gone children, closed by the overseer's thread
        self._thread = threading.Thread(target=self._run, name="cogman-hard-limits", daemon=True)

    def add(self, process: BaseProcess, reader: Connection) -> None:
        with self._lock:
            self._children[process.pid or 0] = _Child(process, reader)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """End no child from now on (a child frozen meanwhile is let go on, to stop with the others)."""
        self.stop.set()

    def ended_here(self, process: BaseProcess) -> bool:
        """Whether ``process`` (now gone) was killed for a hard time limit; forgets it either way."""
        pid = process.pid or 0
        with self._lock:
            child = self._children.pop(pid, None)
            if child is not None:
                self._forgotten.append(child.reader)  # it may be waiting on it right now
            ended = pid in self._ended
            self._ended.discard(pid)
            return ended

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._step()
            except BaseException:
                log.exception("the hard time limit overseer failed; it carries on")
                self.stop.wait(POLL)

    def _step(self) -> None:
        with self._lock:
            forgotten, self._forgotten = self._forgotten, []
            watched = [child for child in self._children.values() if not (child.ending or child.gone)]
            deadlines = [timing.deadline for child in watched for timing in child.timed.values()]
        for reader in forgotten:
            reader.close()
        timeout = max(0.0, min([POLL, *(deadline - time.monotonic() for deadline in deadlines)]))
        readers = [child.reader for child in watched]
        ready = multiprocessing.connection.wait(readers, timeout) if readers else []
        if not readers:
            self.stop.wait(timeout)
        for child in watched:
            if child.reader in ready:
                self._read(child)
        now = time.monotonic()
        with self._lock:
            for child in watched:
                overdue = [timing for timing in child.timed.values() if timing.deadline <= now]
                if overdue and not child.gone and child.process.pid not in self._ended:
                    child.ending = True
                    ender = threading.Thread(target=self._end, args=(child, overdue), daemon=True)
                    ender.name = f"cogman-hard-limit-{child.process.pid}"
                    ender.start()

    def _read(self, child: _Child) -> None:
        """Apply what ``child`` sent so far (never blocks: only what is there)."""
        try:
            while child.reader.poll():
                report = child.reader.recv()
                with self._lock:
                    if report[0] == "start":
                        _, thread, task_id, limit = report
                        now = time.monotonic()
                        child.timed[thread] = _Timing(thread, task_id, limit, now, now + limit + self.grace)
                    else:
                        child.timed.pop(report[1], None)
        except (EOFError, OSError):
            child.gone = True  # a closed pipe is always ready: stop waiting on it

    def _end(self, child: _Child, overdue: list[_Timing]) -> None:
        """Top level of an ender thread: freeze the child, record its overrun tasks, kill it. Whatever
        fails here, the child is killed or let go on: it is never left frozen."""
        pid = child.process.pid or 0
        try:
            if self._freeze(pid):
                self._read(child)  # frozen: everything it sent is in the pipe now
                with self._lock:
                    still = [timing for timing in overdue if child.timed.get(timing.thread) is timing]
                if [timing for timing in still if self._record(timing)]:
                    self._kill(pid)
                    return
                with self._lock:  # over in time after all (its end report was lost): let it go on
                    for timing in still:
                        child.timed.pop(timing.thread, None)
                _signal(pid, signal.SIGCONT)
        except GiveUp:
            _signal(pid, signal.SIGCONT)  # the supervisor is stopping: the child stops as the others do
        except BaseException:
            log.exception("could not record the hard time limit of worker process %s; killing it anyway", pid)
            self._kill(pid)
        finally:
            with self._lock:
                child.ending = False

    def _freeze(self, pid: int) -> bool:
        """SIGSTOP ``pid`` and wait until it is stopped; False if it exited first (the supervisor sees it)."""
        if not _signal(pid, signal.SIGSTOP):
            return False
        try:
            state = os.waitid(os.P_PID, pid, os.WEXITED | os.WSTOPPED | os.WNOWAIT)  # reaps nothing
        except ChildProcessError:
            return False
        return state is not None and state.si_code == os.CLD_STOPPED

    def _kill(self, pid: int) -> None:
        with self._lock:
            self._ended.add(pid)
        _signal(pid, signal.SIGKILL)

    def _record(self, timing: _Timing) -> bool:
        """Record ``timing``'s attempt failed (and its retry) as the worker would; False when its record
        is final already (the handler ended in time and the report was lost)."""
        backend, task_id = self.app.backend, timing.task_id
        record = self._until_recorded(lambda: backend.get(task_id))
        if record is not None and record.status.is_final:
            return False
        exc = HardTimeLimitExceeded(timing.limit, self.grace)
        error = f"{type(exc).__name__}: {exc}"
        task = self.app.tasks.get(record.name) if record is not None else None
        receipt, what = None, "no retry left"
        decision = decide(task.retry_policy, exc, record.attempt) if record is not None and task is not None else None
        if record is not None and decision is not None and decision.retry:
            failed, countdown = Message.for_record(record, retries_left=0), decision.countdown
            spawned = self._until_recorded(
                lambda: self.app.client.spawn_retry(failed, record.original_task_id, record.attempt, countdown)
            )
            if spawned is not None:
                receipt, what = spawned[1], f"retrying as {spawned[0].task_id} in {countdown:g} s"
        elif decision is not None:
            what = decision.why_not or what
        duration = time.monotonic() - timing.started
        self._until_recorded(
            lambda: backend.transition(task_id, Status.FAILED, fail_error=error, duration=duration, returning=False)
        )
        self._wait(backend.durable, "recording the failure")
        if receipt is not None:
            self._wait(receipt.add_done_callback, "publishing the retry")
        log.error("task %s ran past its hard time limit (%s); ending its worker process: %s", task_id, what, error)
        return True

    def _wait(self, register: Any, what: str) -> None:
        done = threading.Event()
        failures: list[str | None] = []

        def settled(failure: str | None) -> None:
            failures.append(failure)
            done.set()

        register(settled)
        while not done.wait(POLL):
            if self.stop.is_set():
                raise GiveUp(what)
        if failures and failures[0] is not None:
            log.warning("%s failed (%s); ending the process anyway: its message comes back", what, failures[0])

    def _until_recorded(self, call: Any) -> Any:
        return through_outage(call, "record a hard time limit", self.stop, GiveUp)


def _signal(pid: int, signum: int) -> bool:
    """Send ``signum``; False if the process is gone already."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True
