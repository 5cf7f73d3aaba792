"""Config: every tunable in one dataclass. Each field can also be passed to ``App(...)`` as a keyword."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from cogman.errors import ConfigError

DAY = 24 * 3600.0


def _env_url(name: str) -> str:
    return os.environ.get(name) or "memory://"


@dataclass(frozen=True)
class Config:
    """Settings shared by clients and workers. Durations are in seconds."""

    #: Where tasks travel: ``memory://`` (in-process) or ``amqp://user:pass@host:5672//``.
    broker_url: str = field(default_factory=lambda: _env_url("COGMAN_BROKER_URL"))
    #: Where task records live: ``memory://``, ``redis://...``, ``mongodb://...``, or a list (all are
    #: written, the first is read).
    backend_url: str | list[str] = field(default_factory=lambda: _env_url("COGMAN_BACKEND_URL"))

    #: How long a client keeps trying to reach a lost broker before sends raise (0 = forever).
    connection_timeout: float = 600.0
    #: How long a send waits for the broker's publisher confirm.
    request_timeout: float = 5.0
    #: ``"recorded"``: ``.delay()`` returns once the task's record is in the backend and its message is
    #: handed to the publisher (the confirm is read in the background; a crash before it is covered by
    #: re-enqueue). ``"confirmed"``: it returns once RabbitMQ confirmed the message. See docs/guarantees.md.
    send_mode: Literal["recorded", "confirmed"] = "recorded"
    #: ``"lean"`` trades what Dramatiq's default trades, for speed (docs/guarantees.md#the-lean-profile):
    #: ``.delay()`` hands the task to a background thread that records and publishes in batches (a crash
    #: of the sending process loses what it had not sent), and a worker does not write ``in_progress``
    #: before a message's first run. ``"default"``: every guarantee.
    profile: Literal["default", "lean"] = "default"
    #: Lean profile: most tasks ``.delay()`` hands over before they are recorded and published; a send
    #: into a full buffer waits up to ``request_timeout``, then raises SendBufferFull.
    send_buffer_limit: int = 10_000

    #: Queues ``high_priority_queue_0..N-1``; senders spread tasks over them round robin.
    high_priority_queue_count: int = 1
    #: Queues ``low_priority_queue_0..N-1``.
    low_priority_queue_count: int = 1
    #: ``"classic"`` (Cogman's topology) or ``"quorum"`` (replicated, for a RabbitMQ cluster).
    queue_type: str = "classic"
    #: Put in front of every queue and exchange name cogman declares (``shop``: ``shop.high_priority_queue_0``,
    #: ``shop.cogman.dead_letter``, ``shop.cogman.delay.3``...), so apps sharing a vhost never take each
    #: other's tasks; empty: Cogman's names. Better still: a vhost per app (docs/guarantees.md).
    queue_prefix: str = ""

    #: Run every send inline, in the caller, before ``.delay()`` returns (for unit tests of your tasks;
    #: see cogman/worker/eager.py). The broker is then an in-process one, whatever ``broker_url`` says.
    eager: bool = False

    #: Worker threads running handlers.
    concurrency: int = 8
    #: Unstarted messages a worker may hold; None means twice its concurrency.
    prefetch: int | None = None
    #: How long a stopping worker lets running handlers finish, in all (not per handler), before it
    #: gives up on them; under Kubernetes' default 30 s termination grace.
    grace_period: float = 25.0
    #: With ``--processes``: how long a task may run past its ``time_limit`` before the supervisor ends its
    #: worker process (the hard limit, which stops even a blocking call in C; the process's other running
    #: tasks go back to the broker) and records the attempt failed; None: no hard limit.
    hard_time_limit_grace: float | None = 10.0
    #: Largest message body sent or read, in bytes: checked at ``.delay()`` before anything is recorded,
    #: and a larger delivery is dead-lettered unread (RabbitMQ's own default limit is 128 MiB).
    max_message_size: int = 8 * 1024 * 1024
    #: Largest result a task may return, in bytes of its JSON: a larger one fails the attempt without a
    #: retry (the handler ran; its side effects would repeat), with an error naming both sizes.
    max_result_size: int = 1024 * 1024
    #: Most bytes of a failed attempt's ``fail_error``, and of its ``traceback``, a record keeps: the
    #: start of the error and the end of the traceback, marked ``...[truncated N bytes]``.
    max_error_size: int = 8192
    #: How long ``close()`` (and interpreter exit) waits for the outbox to be confirmed.
    close_timeout: float = 10.0
    #: Most messages a process holds unconfirmed (outbox and in flight); a send into a full outbox waits
    #: up to ``request_timeout``, then raises BrokerUnavailable.
    outbox_limit: int = 100_000
    #: How often a delivery whose processing failed unexpectedly (not the handler's own exception) is
    #: given back to the broker before it is dead-lettered with the error; and how often a task may run
    #: again after a run that left no outcome (its worker died) before it is recorded failed and
    #: dead-lettered. Quorum queues get ``x-delivery-limit`` = this + 1.
    max_redeliveries: int = 5

    #: How long Redis (and the memory:// backend) keeps a record after its last change.
    redis_ttl: float = 7 * DAY
    #: Namespace of every Redis key (``<prefix>:task:<id>``...), so apps can share a database.
    redis_prefix: str = "cogman"
    #: Shards of the Redis task log (``<prefix>:{<tag>}:...``): on a Redis Cluster each script touches one
    #: shard's slot. None: 16 on a Redis Cluster, 1 elsewhere (the unsharded layout). Every process of an
    #: app must use the same value (docs/scaling.md).
    redis_shards: int | None = None
    #: Replicas that must hold each write to Redis (``WAIT``) before it counts as stored: a worker acks a
    #: message, and ``.delay()`` returns, only then. 0: the primary's reply is enough (docs/scaling.md).
    redis_wait_replicas: int = 0
    #: How long one ``WAIT`` blocks; fewer replicas by then makes the write wait as in a Redis outage.
    redis_wait_timeout: float = 1.0
    #: How long MongoDB keeps a record after its creation (a TTL index; 0 keeps them for good).
    mongo_ttl: float = 30 * DAY
    mongo_database: str = "cogman"
    #: Records live in this collection, statuses that arrived early in ``<collection>_early``.
    mongo_collection: str = "tasks"

    #: Republish records still unconfirmed (``initiated``, or ``retry`` attempts) once older than
    #: ``re_enqueue_grace``: on connect, on reconnect and every ``re_enqueue_interval`` seconds. None
    #: means on in workers whose backend outlives the process (Redis, MongoDB), off elsewhere.
    re_enqueue: bool | None = None
    #: Age (and lease length) before an unconfirmed record is republished; must exceed how long a
    #: client may take to publish a message it recorded (its own lease renewal covers outbox outages).
    re_enqueue_grace: float = 60.0
    #: How often a sweeping worker looks for stale unconfirmed records.
    re_enqueue_interval: float = 30.0
    #: ``re_enqueue_grace`` for records sent from inside a handler (child tasks, the workflow steps a
    #: worker sends), whose sends a time limit or a killed worker cuts short between the record and the
    #: publish; sweeping workers then also look this often (at most once a second).
    re_enqueue_child_grace: float = 10.0

    #: Port of a worker's Prometheus endpoint (the ``Prometheus`` middleware, ``pip install cogman[api]``);
    #: None: no endpoint. With ``--processes N``, process i listens on ``metrics_port + i``.
    metrics_port: int | None = None
    #: Address the Prometheus endpoint listens on: loopback, so only this machine can read it, unless
    #: set to ``0.0.0.0`` (every interface) or the pod's address for a scraper elsewhere.
    metrics_host: str = "127.0.0.1"
    #: Trace sends and attempts with OpenTelemetry when ``opentelemetry-api`` is installed (``pip install
    #: cogman[otel]``) and the program configured a tracer provider (docs/tracing.md); False: never.
    tracing: bool = True
    #: How often a worker writes its heartbeat to the backend (``cogman ping``, ``cogman workers``); 0: never.
    heartbeat_interval: float = 5.0
    #: How long a concurrency slot (``max_concurrency``, docs/control.md) outlives a worker that stopped
    #: renewing it (killed, cut off): a running task's worker renews its slots every third of it.
    concurrency_lease: float = 60.0
    #: Bearer token the REST API asks for (env ``COGMAN_API_TOKEN``), visible ASCII only; None: no token,
    #: and the API answers only requests to loopback addresses and names.
    api_token: str | None = field(default_factory=lambda: os.environ.get("COGMAN_API_TOKEN") or None, repr=False)
    #: Origins a browser may call the REST API from (CORS), e.g. ``["https://ops.example.com"]`` or
    #: ``["*"]`` (only with ``api_token``); empty: only the dashboard's own origin.
    api_cors_origins: list[str] = field(default_factory=list)

    #: Of the ticks of a periodic schedule missed while every beat was down (or stalled), how many a
    #: beat sends late: the newest ones; older missed ticks are skipped. 0: never catch up.
    periodic_catch_up: int = 1

    def __post_init__(self) -> None:
        for name in (
            "high_priority_queue_count",
            "low_priority_queue_count",
            "concurrency",
            "max_message_size",
            "max_result_size",
            "max_error_size",
            "outbox_limit",
            "send_buffer_limit",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in (
            "connection_timeout",
            "request_timeout",
            "grace_period",
            "redis_ttl",
            "mongo_ttl",
            "close_timeout",
            "max_redeliveries",
            "re_enqueue_grace",
            "re_enqueue_child_grace",
        ):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.redis_wait_replicas < 0 or not 0 < self.redis_wait_timeout < float("inf"):
            raise ConfigError(
                f"redis_wait_replicas must be >= 0 and redis_wait_timeout > 0 seconds (0 would make WAIT block "
                f"for ever), got {self.redis_wait_replicas!r}, {self.redis_wait_timeout!r}"
            )
        if self.redis_shards is not None and not 1 <= self.redis_shards <= 16384:
            raise ConfigError(f"redis_shards must be between 1 and 16384, got {self.redis_shards!r}")
        if self.redis_ttl < 1:
            raise ConfigError(f"redis_ttl must be at least 1 second, got {self.redis_ttl!r}")
        if self.prefetch is not None and self.prefetch < 1:
            raise ConfigError(f"prefetch must be at least 1, got {self.prefetch!r}")
        if self.re_enqueue_interval <= 0:
            raise ConfigError(f"re_enqueue_interval must be positive, got {self.re_enqueue_interval!r}")
        if self.send_mode not in ("recorded", "confirmed"):
            raise ConfigError(f"send_mode must be 'recorded' or 'confirmed', got {self.send_mode!r}")
        if self.profile not in ("default", "lean"):
            raise ConfigError(f"profile must be 'default' or 'lean', got {self.profile!r}")
        if self.queue_type not in ("classic", "quorum"):
            raise ConfigError(f"queue_type must be 'classic' or 'quorum', got {self.queue_type!r}")
        if self.queue_prefix and (
            len(self.queue_prefix) > 64
            or not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", self.queue_prefix)
            or self.queue_prefix.split(".")[0].lower() == "amq"
        ):
            raise ConfigError(
                f"queue_prefix must be at most 64 characters, words of letters, digits, '_' or '-' joined by "
                f"'.', and not start with 'amq' (RabbitMQ reserves amq.*), got {self.queue_prefix!r}"
            )
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be a TCP port (0-65535), got {self.metrics_port!r}")
        if not isinstance(self.metrics_host, str) or not self.metrics_host.strip():
            raise ConfigError(f"metrics_host must be an address to listen on (127.0.0.1), got {self.metrics_host!r}")
        grace = self.hard_time_limit_grace
        if grace is not None and not 0 <= grace < float("inf"):
            raise ConfigError(f"hard_time_limit_grace must be None or finite seconds >= 0, got {grace!r}")
        if self.periodic_catch_up < 0:
            raise ConfigError(f"periodic_catch_up must not be negative, got {self.periodic_catch_up!r}")
        if self.heartbeat_interval < 0:
            raise ConfigError(f"heartbeat_interval must not be negative, got {self.heartbeat_interval!r}")
        if not 0 < self.concurrency_lease <= 3600:
            raise ConfigError(f"concurrency_lease must be > 0 and <= 3600 seconds, got {self.concurrency_lease!r}")

    @property
    def backend_urls(self) -> list[str]:
        urls = [self.backend_url] if isinstance(self.backend_url, str) else list(self.backend_url)
        if not urls:
            raise ConfigError("backend_url must name at least one backend")
        return urls

    def prefetch_for(self, concurrency: int) -> int:
        return self.prefetch if self.prefetch is not None else 2 * concurrency

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Config:
        """Defaults, overridden by ``COGMAN_<FIELD>`` variables, overridden by ``options``."""
        from cogman.config.environment import options_from_env

        return cls(**options_from_env(environ)).with_options(**options)

    def with_options(self, **options: Any) -> Config:
        """A copy with ``options`` applied; an unknown option name is an error that lists the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}")
        return replace(self, **options) if options else self
