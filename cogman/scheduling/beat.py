"""The beat: sends an app's periodic ticks. Any number of beats may run at once (one per replica).

Each pass looks, per schedule, at the ticks due since the previous pass and sends each through
:func:`cogman.claims.send_if_new` with the tick's derived id: the beat whose create lands first sends
it, the others find the record there and send nothing. So N beats send every tick once, and a beat
that dies after claiming a tick but before publishing it leaves an ``initiated`` record that the
workers' re-enqueue sweep publishes.

A tick's record names the beat that claimed it, so a beat whose create's reply was lost (the create ran,
the answer never came, the retried create found the record) recognises its own claim and publishes it,
in that pass or the next, rather than leaving it to the sweep.

No bursts: a pass sends the newest due tick and at most ``catch_up`` (``Config.periodic_catch_up``,
default 1) older ones it missed; a beat's first pass sends only the ``catch_up`` newest ticks since the
schedule's last recorded run (none for a schedule that never ran). Everything older is skipped.

The loop sleeps until the next tick on an event, so ``stop()`` ends it at once; its top level catches
everything, logs it, and carries on with the next pass.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from cogman.record import utcnow
from cogman.scheduling.claims import send_if_new
from cogman.scheduling.periodic import last_tick
from cogman.sending.host import SendingHost

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cogman.scheduling.periodic import Schedule

log = logging.getLogger("cogman.beat")

#: Longest sleep between passes: a clock that jumps is noticed within it.
MAX_SLEEP = 30.0
#: Pause after a pass that raised, so a broken backend does not spin the loop.
ERROR_PAUSE = 1.0


class BeatHost(SendingHost, Protocol):
    """The app as a beat uses it: its schedules, and sending their ticks."""

    @property
    def schedules(self) -> Mapping[str, Schedule]: ...


class Beat:
    """``Beat(app).start()`` runs in a thread beside a worker; ``run()`` blocks (``cogman beat``)."""

    def __init__(self, app: BeatHost, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.app = app
        self.clock = clock
        #: Per schedule, the moment up to which its ticks were considered (sent, claimed by another
        #: beat, or skipped as too old); absent until the first pass read its last run.
        self._considered: dict[str, datetime] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Names this beat in the records of the ticks it claims.
        self.claimant = f"beat {uuid.uuid4().hex}"

    def run_pending(self) -> list[str]:
        """One pass over every schedule; returns the ids of the ticks this beat sent."""
        now = self.clock()
        sent: list[str] = []
        for schedule in list(self.app.schedules.values()):
            try:
                sent += self._pass(schedule, now)
            except Exception as exc:  # its ticks are looked at again next pass (within catch_up)
                log.error("periodic %s: could not send its due ticks: %s: %s",
                          schedule.name, type(exc).__name__, exc)  # fmt: skip
        return sent

    def _pass(self, schedule: Schedule, now: datetime) -> list[str]:
        catch_up = schedule.catch_up if schedule.catch_up is not None else self.app.config.periodic_catch_up
        since = self._considered.get(schedule.name)
        if since is None:  # this beat's first look: what ran while no beat of ours was up?
            last = last_tick(self.app.backend, schedule)
            due = [] if last is None else schedule.ticks(now, last[0], catch_up)
            if due:  # a pass that raises retries from the oldest of these, not from the run it claimed
                self._considered[schedule.name] = due[-1] - timedelta(microseconds=1)
        else:
            due = schedule.ticks(now, since, 1 + catch_up)
        sent = []
        for tick in reversed(due):
            [record] = self.app.new_records(
                schedule.task,
                [(schedule.args, schedule.kwargs)],
                primary_key=schedule.primary_key,
                task_ids=[schedule.tick_id(tick)],
                extras=[schedule.tick_extra(tick)],
            )
            if send_if_new(self.app, record, self.claimant).created:
                log.info("periodic %s: sent tick %s as task %s", schedule.name, tick.isoformat(), record.task_id)
                sent.append(record.task_id)
            # Settled: a later pass never claims it again, even if a newer tick of this pass raises.
            self._considered[schedule.name] = tick
        self._considered[schedule.name] = now
        return sent

    def seconds_to_next(self) -> float:
        """How long until the next tick of any schedule (at most MAX_SLEEP)."""
        now = self.clock()
        ticks = [schedule.next_after(now) for schedule in self.app.schedules.values()]
        wait = min(ticks) - now if ticks else timedelta(seconds=MAX_SLEEP)
        return min(MAX_SLEEP, max(0.0, wait.total_seconds()))

    # The loop

    def run(self) -> None:
        """Pass after pass until ``stop()``; never raises."""
        names = ", ".join(f"{s.name} [{s.describe()}]" for s in self.app.schedules.values()) or "none"
        log.info("beat started; schedules: %s", names)
        while not self._stop.is_set():
            try:
                self.run_pending()
                pause = self.seconds_to_next()
            except BaseException:  # the beat outlives anything a pass throws
                log.exception("beat pass failed; the next one runs in %.0f s", ERROR_PAUSE)
                pause = ERROR_PAUSE
            self._stop.wait(pause)
        log.info("beat stopped")

    def start(self) -> Beat:
        self._thread = threading.Thread(target=self.run, name="cogman-beat", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
