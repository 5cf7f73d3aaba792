"""The rows of the benchmark: which systems run, their queues, their worker command, their role.

A role names what a row is compared as (``ceiling``, ``kombu-confirm``, ``cogman-default``, ``celery``,
``dramatiq``, and the peers at cogman's guarantees, ``celery-confirm`` and ``dramatiq-confirm``); targets
and ratios refer to roles, so they hold whatever cogman's send modes are.
cogman's rows are data-driven: one per value of ``Config.send_mode`` the installed cogman accepts, and the
lean profile's (role ``cogman-lean``, issue 25 part 2) when ``Config`` accepts ``profile="lean"``.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KOMBU_PLAIN_QUEUE = "bench.kombu.plain"
KOMBU_CONFIRM_QUEUE = "bench.kombu.confirm"
CELERY_QUEUE = "bench.celery"
CELERY_CONFIRM_QUEUE = "bench.celery.confirm"
DRAMATIQ_QUEUE = "bench_dramatiq"
DRAMATIQ_CONFIRM_QUEUE = "bench_dramatiq_confirm"
#: cogman's own topology: its queue names are fixed (``high_priority_queue_N``...), and no other system
#: here uses them.
COGMAN_QUEUES = ("high_priority_queue_0", "low_priority_queue_0", "cogman.dead_letter")
#: Worker shape for every system that has processes and threads: 2 processes x 8 threads.
PROCESSES, THREADS = 2, 8
#: Unacked messages the raw kombu consumer may hold (cogman's worker holds 2 x its concurrency a process).
KOMBU_PREFETCH = 32


def celery_worker(module: str, queue: str) -> tuple[str, ...]:
    head = ("-m", "celery", "-A", module, "worker", "-P", "prefork", "-c", str(PROCESSES), "-Q", queue)
    return (*head, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING")


def dramatiq_worker(module: str, queue: str) -> tuple[str, ...]:
    return ("-m", "dramatiq", module, "-p", str(PROCESSES), "-t", str(THREADS), "-Q", queue)


def dramatiq_queues(queue: str) -> tuple[str, ...]:
    """Dramatiq declares a delay queue and a dead-letter queue beside each queue."""
    return (queue, f"{queue}.DQ", f"{queue}.XQ")


@dataclass(frozen=True)
class System:
    key: str
    label: str
    #: Names its Redis counter and latency list; rows of one family never run at the same time.
    family: str
    role: str | None
    queues: tuple[str, ...]
    #: The worker's argv after ``python``.
    worker_argv: tuple[str, ...]
    has_batch: bool
    send_mode: str | None = None

    def worker_command(self) -> str:
        return " ".join(("python", *self.worker_argv))


def send_modes(config_cls: Any) -> tuple[list[str | None], str | None]:
    """The send modes a cogman ``Config`` class supports, default first, and the default.

    No ``send_mode`` field means one mode (today's: ``.delay()`` waits for the confirm), shown as None.
    With the field, the candidates are its ``Literal`` values (if annotated so), its default,
    ``"confirmed"`` and a module-level ``SEND_MODES``; each is kept only if ``Config`` accepts it.
    """
    field = next((f for f in dataclasses.fields(config_cls) if f.name == "send_mode"), None)
    if field is None:
        return [None], None
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        default = None
    candidates: list[Any] = [default]
    try:
        hint = typing.get_type_hints(config_cls).get("send_mode")
    except Exception:  # an annotation that does not resolve here: fall back to the other sources
        hint = None
    if typing.get_origin(hint) is typing.Literal:
        candidates += list(typing.get_args(hint))
    candidates.append("confirmed")
    module = sys.modules.get(config_cls.__module__)
    candidates += list(getattr(module, "SEND_MODES", ()))
    modes: list[str | None] = []
    for mode in candidates:
        if isinstance(mode, str) and mode not in modes and _accepts(config_cls, mode):
            modes.append(mode)
    return modes, default if default in modes else None


def _accepts(config_cls: Any, mode: str) -> bool:
    try:
        config_cls(broker_url="memory://", backend_url="memory://", send_mode=mode)
    except Exception:
        return False
    return True


def cogman_systems(modes: Iterable[str | None], default: str | None) -> list[System]:
    worker = ("-m", "cogman", "-A", "bench.cogman_tasks:app", "--log-level", "WARNING", "worker")
    worker += ("--processes", str(PROCESSES), "-c", str(THREADS))
    rows = []
    for mode in modes:
        is_default = mode == default
        if mode is None:
            key, label = "cogman", "cogman (`.delay()` waits for the confirm; no `send_mode` yet)"
        else:
            key = f"cogman-{mode}"
            label = f"cogman, send_mode={mode!r}" + (" (default)" if is_default else "")
        role = "cogman-default" if is_default else None
        rows.append(System(key, label, "cogman", role, COGMAN_QUEUES, worker, has_batch=True, send_mode=mode))
    return rows


def lean_systems(config_cls: Any) -> list[System]:
    """The lean profile's row, if the installed cogman has it: the same worker shape, its own app module."""
    try:
        config_cls(broker_url="memory://", backend_url="memory://", profile="lean")
    except Exception:
        return []
    worker = ("-m", "cogman", "-A", "bench.cogman_lean_tasks:app", "--log-level", "WARNING", "worker")
    worker += ("--processes", str(PROCESSES), "-c", str(THREADS))
    label = "cogman, profile='lean' (background sends, no in_progress)"
    return [System("cogman-lean", label, "cogman", "cogman-lean", COGMAN_QUEUES, worker, has_batch=True)]


def all_systems(config_cls: Any) -> list[System]:
    """Every row, in the order of the table: the two raw kombu rows, cogman's, then the peers."""
    kombu_worker = ("-m", "bench.kombu_worker", "--prefetch", str(KOMBU_PREFETCH))
    modes, default = send_modes(config_cls)
    return [
        System(
            "kombu-plain",
            "raw kombu, persistent, no confirms (the ceiling)",
            "kombu-plain",
            "ceiling",
            (KOMBU_PLAIN_QUEUE,),
            (*kombu_worker, "--queue", KOMBU_PLAIN_QUEUE, "--family", "kombu-plain"),
            has_batch=False,
        ),
        System(
            "kombu-confirm",
            "raw kombu, persistent, a confirm per message (batch: confirms of 500 awaited together)",
            "kombu-confirm",
            "kombu-confirm",
            (KOMBU_CONFIRM_QUEUE,),
            (*kombu_worker, "--queue", KOMBU_CONFIRM_QUEUE, "--family", "kombu-confirm"),
            has_batch=True,
        ),
        *cogman_systems(modes, default),
        *lean_systems(config_cls),
        System(
            "celery",
            f"Celery prefork -c {PROCESSES}, acks_late, Redis results",
            "celery",
            "celery",
            (CELERY_QUEUE,),
            celery_worker("bench.celery_tasks", CELERY_QUEUE),
            has_batch=False,
        ),
        System(
            "celery-confirm",
            f"Celery prefork -c {PROCESSES}, acks_late, Redis results, publisher confirms (equal guarantees)",
            "celery-confirm",
            "celery-confirm",
            (CELERY_CONFIRM_QUEUE,),
            celery_worker("bench.celery_confirm_tasks", CELERY_CONFIRM_QUEUE),
            has_batch=False,
        ),
        System(
            "dramatiq",
            f"Dramatiq {PROCESSES} processes x {THREADS} threads, Redis results",
            "dramatiq",
            "dramatiq",
            dramatiq_queues(DRAMATIQ_QUEUE),
            dramatiq_worker("bench.dramatiq_tasks", DRAMATIQ_QUEUE),
            has_batch=False,
        ),
        System(
            "dramatiq-confirm",
            f"Dramatiq {PROCESSES} processes x {THREADS} threads, Redis results, confirm_delivery=True "
            "(equal guarantees)",
            "dramatiq-confirm",
            "dramatiq-confirm",
            dramatiq_queues(DRAMATIQ_CONFIRM_QUEUE),
            dramatiq_worker("bench.dramatiq_confirm_tasks", DRAMATIQ_CONFIRM_QUEUE),
            has_batch=False,
        ),
    ]
