"""A lock between test processes on one machine, around the shared RabbitMQ and Redis.

Most tests only use the services and can run beside another suite (each suite has its own vhost,
``COGMAN_TEST_VHOST``, and Redis database, ``COGMAN_TEST_REDIS_URL``). A few stop RabbitMQ, shut Redis
down, raise an alarm or change a broker-wide limit: those are marked ``@pytest.mark.disruptive`` and take
the lock exclusively, so no test of another suite runs while they do. In CI there is one suite, and
the lock is never contended.

A second lock, the turnstile, gives a waiting exclusive holder priority: a new shared holder passes the
turnstile first, and an exclusive one holds it while it waits, so a busy suite cannot starve it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_DIR = Path(os.environ.get("COGMAN_TEST_LOCK_DIR", tempfile.gettempdir()))
_held_exclusively = False


def require_exclusive(what: str) -> None:
    """Called by the helpers that disrupt a service: the test must be marked ``disruptive``."""
    if not _held_exclusively:
        raise AssertionError(f"{what} disrupts a shared service: mark the test @pytest.mark.disruptive")


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def services(exclusive: bool) -> Iterator[None]:
    """Hold the services shared (most tests) or exclusively (tests that disrupt them)."""
    main = LOCK_DIR / "cogman-test-services.lock"
    turnstile = LOCK_DIR / "cogman-test-services.turnstile"
    global _held_exclusively
    if exclusive:
        with _flock(turnstile, fcntl.LOCK_EX), _flock(main, fcntl.LOCK_EX):
            _held_exclusively = True
            try:
                yield
            finally:
                _held_exclusively = False
        return
    with _flock(turnstile, fcntl.LOCK_EX):
        handle = open(main, "a+b")  # noqa: SIM115 - released in the finally below
        fcntl.flock(handle, fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
