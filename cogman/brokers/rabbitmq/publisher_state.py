"""The publisher's life as one state machine: which phase it is in, and the only place that moves it.

It replaces six flags whose combinations nobody could list (``_down_since``, ``_gone``, ``_orphans``,
``_want_connection``, ``_unannounced``, ``_closing``); one of those combinations republished a message
RabbitMQ had refused, forever. Each phase says what a send does and what the flusher thread does::

    idle --------- a send dials ---------------+
      | re-enqueue wants a connection           v
      +--> connecting ---- dialled ---------->  up <--- unblocked --- blocked
               |                                 |  --- connection.blocked (an alarm) -->
               +-- dial failed --> down <- lost -+
                                    |  -- dialled --> up
                                    +-- past connection_timeout --> gone -- dialled --> up
    any dial refused (login, vhost, topology) --> refused -- a send's own dial succeeds --> up
    close() from any phase --> closing -- outbox confirmed, or close_timeout --> closed

The picture shows the usual paths; ``MOVES`` below is the authority. A move the table does not allow is
ignored (and logged at DEBUG), as a late task status write is: a connection lost while closing leaves
the publisher closing.
"""

from __future__ import annotations

import logging
import threading
import time
from enum import StrEnum

log = logging.getLogger("cogman.rabbitmq")


class Phase(StrEnum):
    IDLE = "idle"  #: nothing sent yet: connects lazily, on the first send
    CONNECTING = "connecting"  #: a connection is wanted before any send (re-enqueue): the flusher dials
    UP = "up"  #: connected: a send goes out at once (behind the outbox, if anything waits there)
    BLOCKED = "blocked"  #: RabbitMQ raised a memory or disk alarm: sends park in the outbox
    DOWN = "down"  #: the connection is lost: sends park, the flusher redials with backoff
    GONE = "gone"  #: down for longer than connection_timeout: sends raise, the outbox was abandoned
    REFUSED = "refused"  #: login, vhost or topology refused: sends raise (each dials once), no redial
    CLOSING = "closing"  #: close(): sends raise, the flusher drains the outbox until close_timeout
    CLOSED = "closed"  #: final


MOVES: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.CONNECTING, Phase.UP, Phase.DOWN, Phase.REFUSED, Phase.CLOSING}),
    Phase.CONNECTING: frozenset({Phase.UP, Phase.DOWN, Phase.REFUSED, Phase.CLOSING}),
    Phase.UP: frozenset({Phase.BLOCKED, Phase.DOWN, Phase.CLOSING}),
    Phase.BLOCKED: frozenset({Phase.UP, Phase.DOWN, Phase.CLOSING}),
    Phase.DOWN: frozenset({Phase.UP, Phase.GONE, Phase.REFUSED, Phase.CLOSING}),
    Phase.GONE: frozenset({Phase.UP, Phase.REFUSED, Phase.CLOSING}),
    Phase.REFUSED: frozenset({Phase.UP, Phase.DOWN, Phase.REFUSED, Phase.CLOSING}),
    Phase.CLOSING: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}

#: A send made in these phases is published by the caller's own thread (it dials when not connected).
SEND_DIRECTLY = frozenset({Phase.IDLE, Phase.CONNECTING, Phase.UP, Phase.REFUSED})
#: A send parked in these phases returns at once: waiting for its confirm would only burn the timeout.
AWAY = frozenset({Phase.DOWN, Phase.BLOCKED})
#: The flusher dials in these phases (and while closing, if it still holds messages).
REDIAL = frozenset({Phase.CONNECTING, Phase.DOWN, Phase.GONE})


class PublisherState:
    """One phase, when it was entered, and why; guarded by ``lock``, which also guards the outbox."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.phase = Phase.IDLE
        #: ``time.monotonic()`` when the phase was entered (down for how long, past connection_timeout?).
        self.since = time.monotonic()
        #: Why: the lost connection's error, the refusal, the alarm (None when there is nothing to say).
        self.reason: str | None = None
        #: Set on entering CLOSED, so backoff sleeps and idle waits end at once.
        self.closed = threading.Event()

    def move(self, new: Phase, reason: str | None = None) -> bool:
        """Enter ``new`` if the table allows it (the caller holds ``lock``); False when it stays put."""
        old = self.phase
        if new not in MOVES[old]:
            log.debug("publisher stays %s (not %s)", old, new)
            return False
        self.phase, self.since, self.reason = new, time.monotonic(), reason
        log.debug("publisher %s -> %s%s", old, new, f" ({reason})" if reason else "")
        if new is Phase.CLOSED:
            self.closed.set()
        self.lock.notify_all()
        return True

    def down_for(self) -> float:
        """Seconds since the connection was lost (0 unless down)."""
        return time.monotonic() - self.since if self.phase is Phase.DOWN else 0.0
