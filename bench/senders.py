"""One sender per system: ``send`` queues one task the system's usual way, ``send_batch`` a batch.

Every task carries one argument, ``sent_at``: 0.0, or the wall-clock send time in the latency phase.
Each system's library is imported only when its row runs, so a missing one fails that row alone.
"""

from __future__ import annotations

from typing import Any, Protocol


class Sender(Protocol):
    def send(self, sent_at: float) -> None: ...

    def send_batch(self, count: int) -> None: ...

    def close(self) -> None: ...


class CogmanSender:
    def __init__(self, send_mode: str | None, profile: str | None = None) -> None:
        from bench.cogman_tasks import TASK_NAME, make_app

        options = {} if send_mode is None else {"send_mode": send_mode}
        if profile is not None:
            options["profile"] = profile
        self.app = make_app(**options)
        self.task = self.app.tasks[TASK_NAME]

    def send(self, sent_at: float) -> None:
        self.task.delay(sent_at)

    def send_batch(self, count: int) -> None:
        self.task.send_many([(0.0,)] * count)

    def close(self) -> None:
        self.app.close()


class CelerySender:
    def __init__(self, confirms: bool) -> None:
        if confirms:
            from bench.celery_confirm_tasks import app, noop
        else:
            from bench.celery_tasks import app, noop
        self.app = app
        self.task: Any = noop

    def send(self, sent_at: float) -> None:
        self.task.apply_async((sent_at,))

    def send_batch(self, count: int) -> None:
        raise RuntimeError("Celery has no batch send here")

    def close(self) -> None:
        self.app.close()


class DramatiqSender:
    def __init__(self, confirms: bool) -> None:
        if confirms:
            from bench.dramatiq_confirm_tasks import broker, noop
        else:
            from bench.dramatiq_tasks import broker, noop
        self.broker = broker
        self.actor: Any = noop

    def send(self, sent_at: float) -> None:
        self.actor.send(sent_at)

    def send_batch(self, count: int) -> None:
        raise RuntimeError("Dramatiq has no batch send here")

    def close(self) -> None:
        self.broker.close()


def open_sender(key: str, send_mode: str | None) -> Sender:
    """The sender of the row ``key`` (see bench.systems); connections open here, before any timing."""
    if key.startswith("kombu-"):
        from bench.kombu_sender import KombuSender
        from bench.systems import KOMBU_CONFIRM_QUEUE, KOMBU_PLAIN_QUEUE

        confirms = key == "kombu-confirm"
        return KombuSender(KOMBU_CONFIRM_QUEUE if confirms else KOMBU_PLAIN_QUEUE, confirms=confirms)
    if key == "cogman-lean":
        return CogmanSender(send_mode, profile="lean")
    if key.startswith("cogman"):
        return CogmanSender(send_mode)
    if key in ("celery", "celery-confirm"):
        return CelerySender(confirms=key == "celery-confirm")
    if key in ("dramatiq", "dramatiq-confirm"):
        return DramatiqSender(confirms=key == "dramatiq-confirm")
    raise ValueError(f"unknown system {key!r}")
