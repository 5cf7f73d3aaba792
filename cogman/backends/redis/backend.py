"""Redis backend: one hash per attempt, Lua scripts for every state change, sorted sets for queries.

Layout, TTLs, the wake-up list and outage behaviour are described in docs/backends.md. In short:
``<prefix>:task:<id>`` holds the record (each field JSON-encoded), every write is one EVALSHA that checks
the rank, updates the fields and the indexes, refreshes the TTL and wakes waiters; writes that cannot
reach Redis are buffered and replayed in order (:mod:`cogman.backends.outage`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cogman.backends import codec
from cogman.backends.base import UNSET, Started, StatusBucket, TaskPage, TaskQuery
from cogman.backends.outage import WriteBuffer
from cogman.backends.redis import cluster, fanout, limiting, oldest, scripts, spawn, unique
from cogman.backends.redis import create as redis_create
from cogman.backends.redis import queries as redis_queries
from cogman.backends.redis.cancel import RedisCancel
from cogman.backends.redis.go_records import RedisGoRecords
from cogman.backends.redis.keys import DONE_TTL_MS, KeyLayout
from cogman.backends.redis.sentinel import client_factory
from cogman.backends.redis.shards import CLUSTER_DEFAULT_SHARDS, Shards
from cogman.backends.redis.wire import Link, Replication, ScriptCaller, is_transient
from cogman.backends.redis.workers import RedisOperations
from cogman.backends.redis.workflows import RedisWorkflows
from cogman.errors import BackendUnavailable, ConfigError, CorruptRecord
from cogman.record import TaskRecord, utcnow
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.redis.aio import AsyncWakeUp
    from cogman.config.settings import Config

log = logging.getLogger("cogman.backends.redis")

#: Longest single BLPOP of ``wait``; it re-reads the record after each, a safety net for lost tokens.
WAIT_SLICE = 5.0
#: Records per create script call and ids per transition_many call (keeps each script short).
CHUNK = 500


class RedisBackend(RedisCancel, RedisOperations, RedisWorkflows):
    """The Redis task log; thread-safe, one connection pool per instance."""

    def __init__(self, url: str, config: Config, *, retry_seconds: float = 2.0, max_buffered: int = 100_000) -> None:
        on_cluster = cluster.is_cluster_url(url)
        shards = config.redis_shards or (CLUSTER_DEFAULT_SHARDS if on_cluster else 1)
        self.shards = Shards(config.redis_prefix, int(config.redis_ttl * 1000), shards, cluster=on_cluster)
        self.keys = self.shards.single  # the unsharded layout, or shard 0's
        self.url, self.on_cluster = url, on_cluster
        options: dict[str, Any] = {"socket_connect_timeout": 2.0, "retry": Retry(NoBackoff(), 0)}
        # redis://, redis+sentinel:// (following failovers) or redis+cluster:// (following the slot map)
        connect, where = cluster.client_factory(url) if on_cluster else client_factory(url)
        replicas, wait_timeout = config.redis_wait_replicas, config.redis_wait_timeout
        self.replication = Replication(replicas, int(wait_timeout * 1000), self.keys.wait_mark()) if replicas else None
        socket_timeout = 5.0 + (wait_timeout if replicas else 0.0)  # a WAIT must time out before its socket
        self.client = connect(socket_timeout=socket_timeout, health_check_interval=30, **options)
        self._waits = connect(socket_timeout=WAIT_SLICE + 5.0, **options)
        self._create = self.client.register_script(scripts.source(scripts.CREATE))
        self._transition = self.client.register_script(scripts.source(scripts.TRANSITION))
        self._spawn = self.client.register_script(scripts.source(scripts.SPAWN_RETRY))
        self._start = self.client.register_script(scripts.source(scripts.START))
        self._claim = self.client.register_script(scripts.source(scripts.CLAIM))
        self._renew = self.client.register_script(scripts.source(scripts.RENEW))
        self._page = self.client.register_script(redis_queries.PAGE)
        self._scan = self.client.register_script(redis_queries.SCAN)
        self._records = self.client.register_script(redis_queries.RECORDS)
        caller = cluster.ClusterScriptCaller if on_cluster else ScriptCaller
        self._scripts = caller(self.client, self.replication)
        self._go: RedisGoRecords | None = None
        self.buffer = WriteBuffer(where, is_transient, retry_seconds=retry_seconds, max_pending=max_buffered)

    def __repr__(self) -> str:
        return f"<RedisBackend {self.buffer.name} prefix={self.prefix}>"

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    def key(self, task_id: str) -> str:
        return self.shards.of(task_id).task(task_id)

    def index_key(self, kind: str, value: str | None = None) -> str:
        """An index of the unsharded layout (of shard 0 when sharded)."""
        return self.keys.index(kind, value)

    # Writes

    def create(self, records: Sequence[TaskRecord], *, meanwhile: Callable[[], object] | None = None) -> bool:
        overlap = self.replication is None  # the overlapped path sends without WAIT
        if meanwhile is not None and overlap and len(records) <= CHUNK and not self.buffer.pending:
            return redis_create.create_overlapped(self._link(), self._scripts, self._create, records, meanwhile)
        durable = True
        link = self._link()
        for layout, members in self.shards.group(records, lambda record: record.task_id):
            for start in range(0, len(members), CHUNK):
                args, what = scripts.create_args(layout.common(), members[start : start + CHUNK])
                durable &= self.buffer.write(link.script(self._create, args, layout), what) is not None
        if meanwhile is not None:
            meanwhile()
        return durable

    def transition(
        self,
        task_id: str,
        status: Status,
        *,
        fail_error: str | None = None,
        traceback: str | None = None,
        result: Any = UNSET,
        duration: float | None = None,
        returning: bool = True,
    ) -> TaskRecord | None:
        now = codec.dumps(utcnow().isoformat())
        fields: list[str] = ["updated_at", now, codec.AT + status.value, now]
        if fail_error is not None:
            fields += ["fail_error", codec.dumps(fail_error)]
        if traceback is not None:
            fields += ["traceback", codec.dumps(traceback)]
        if duration is not None:
            fields += ["duration", codec.dumps(duration)]
        if result is not UNSET:
            fields += ["result", codec.dumps(result)]
        want = "1" if returning else "0"
        layout = self.shards.of(task_id)
        args = [*layout.common(), scripts.encoded(status), want, len(fields) // 2, *fields, task_id]
        out = self._committed(self._transition, args, f"move task {task_id} to {status}", layout)
        if not out or not returning:
            return None
        outcome = out[0].decode()
        if outcome == "unknown":
            return None
        if outcome.startswith("corrupt"):
            log.error(
                "not moving task %s to %s: corrupt record at %s (%s)", task_id, status, self.key(task_id), outcome
            )
            return None
        try:
            return codec.from_hash(dict(zip(out[1::2], out[2::2], strict=True)), self.key(task_id))
        except CorruptRecord as exc:
            log.error("task %s moved to %s over an unreadable record: %s", task_id, status, exc)
            return None

    def transition_many(self, task_ids: Sequence[str], status: Status) -> None:
        now = codec.dumps(utcnow().isoformat())
        fields = ["updated_at", now, codec.AT + status.value, now]
        link = self._link()
        for layout, chunk in self._chunks(task_ids):
            args = [*layout.common(), scripts.encoded(status), "0", len(fields) // 2, *fields, *chunk]
            thunk = link.script(self._transition, args, layout)
            out = self.buffer.write(thunk, f"move {len(chunk)} task(s) to {status}")
            for task_id, outcome in zip(chunk, out or [], strict=False):
                if outcome.startswith(b"corrupt"):
                    log.error(
                        "not moving task %s to %s: corrupt record at %s (%s)",
                        task_id,
                        status,
                        self.key(task_id),
                        outcome.decode(),
                    )

    def start(self, task_id: str, token: str = "") -> Started | None:
        layout = self.shards.of(task_id)
        args = [*layout.common(), scripts.encoded(Status.IN_PROGRESS), codec.dumps(utcnow().isoformat()), task_id]
        args += ["1" if self.shards.tagged else "0", token]  # tagged: the original's budget is read apart
        out = self._committed(self._start, args, f"move task {task_id} to in_progress", layout)
        return spawn.started(self._link(), task_id, out)

    def durable(self, callback: Callable[[str | None], None]) -> None:
        self.buffer.durable(callback)

    def claim_stale(self, task_ids: Sequence[str], lease_seconds: float) -> list[str]:
        claimed: list[str] = []
        link = self._link()
        for layout, chunk in self._chunks(task_ids):
            args = [*layout.common(), int(lease_seconds * 1000), *chunk]
            out = self.buffer.call(link.script(self._claim, args, layout), "claim stale records for re-enqueue")
            claimed += [task_id.decode() for task_id in out]
        return claimed

    def renew_leases(self, task_ids: Sequence[str], lease_seconds: float) -> None:
        link = self._link()
        for layout, chunk in self._chunks(task_ids):
            args = [*layout.common(), int(lease_seconds * 1000), *chunk]
            self.buffer.call(link.script(self._renew, args, layout), "renew re-enqueue leases")

    def spawn_retry(self, original_task_id: str, attempt: TaskRecord) -> int | None:
        return spawn.spawn_retry(self._link(), self._spawn, self._create, original_task_id, attempt)

    # Reads

    def get(self, task_id: str) -> TaskRecord | None:
        key = self.shards.of(task_id).task(task_id)

        def read() -> dict[bytes, bytes]:
            try:
                return self.client.hgetall(key)  # type: ignore[return-value]
            except redis.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                kind = self.client.type(key)
                raise CorruptRecord(key, f"a Redis {kind.decode()}, not a hash") from None  # type: ignore[union-attr]

        flat = self.buffer.call(read, f"read task {task_id}")
        if flat:
            return codec.from_hash(flat, key)
        return None if self.on_cluster else self.go_records().read_as_task(task_id)

    def wait(self, task_id: str, timeout: float) -> TaskRecord | None:
        """Read, then BLPOP ``<prefix>:done:<id>`` (pushed by the script that makes the task final), then
        put the token back for the other waiters; re-read after each wake-up or WAIT_SLICE."""
        deadline = time.monotonic() + timeout
        done = self.shards.of(task_id).done(task_id)
        while True:
            try:
                record = self.get(task_id)
            except BackendUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                continue
            remaining = deadline - time.monotonic()
            if (record is not None and record.status.is_final) or remaining <= 0:
                return record
            try:
                token = self._waits.blpop([done], timeout=max(0.01, min(remaining, WAIT_SLICE)))
                if token is not None:
                    pipe = self._waits.pipeline(transaction=True)
                    pipe.rpush(done, token[1])
                    pipe.pexpire(done, DONE_TTL_MS)
                    pipe.execute()
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def async_waker(self) -> AsyncWakeUp | None:
        """``wait``'s wake-up for a coroutine (``get_async``; backends/redis/aio.py), or None behind
        Sentinel or on a Redis Cluster, where ``get_async`` waits in short slices in a thread instead."""
        from cogman.backends.redis.aio import AsyncWakeUp
        from cogman.backends.redis.sentinel import is_sentinel_url

        if self.on_cluster or is_sentinel_url(self.url):
            return None
        return AsyncWakeUp(self, self.url, lambda task_id: self.shards.of(task_id).done(task_id), WAIT_SLICE)

    def query(self, query: TaskQuery) -> TaskPage:
        link = self._link()
        if self.shards.count > 1:
            return fanout.query(link, query, scan_script=self._scan, records_script=self._records)
        return redis_queries.query(
            link, query, page_script=self._page, scan_script=self._scan, records_script=self._records
        )

    def count_by_status(self, start: datetime, end: datetime, bucket_seconds: float) -> list[StatusBucket]:
        if self.shards.count > 1:
            return fanout.count_by_status(self._link(), start, end, bucket_seconds)
        return redis_queries.count_by_status(self._link(), start, end, bucket_seconds)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until writes buffered during an outage are replayed (for tests and clean shutdowns)."""
        return self.buffer.flush(timeout)

    def close(self) -> None:
        self.buffer.close()
        self.client.close()
        self._waits.close()
        self._scripts.close()

    # Helpers

    def _common(self) -> list[Any]:
        return self.keys.common()

    def _window_floor(self) -> int:
        return self.keys.window_floor()

    def _chunks(self, task_ids: Sequence[str]) -> list[tuple[KeyLayout, list[str]]]:
        """``task_ids`` by shard, in chunks of at most CHUNK."""
        return [
            (layout, members[start : start + CHUNK])
            for layout, members in self.shards.group(task_ids)
            for start in range(0, len(members), CHUNK)
        ]

    def _link(self) -> Link:
        """What a helper module is given instead of this class; built per call, so a ``_run`` replaced on
        the instance (the tests' and benchmarks' spies) is the one the helpers use."""
        return Link(self.client, self.buffer, self._run, self.keys, self.shards)

    def _committed(self, script: Any, args: list[Any], what: str, layout: KeyLayout | None = None) -> Any:
        """One script call on this thread's own connection; its reply, or None when the store is
        unreachable and the write was parked for replay. Each handler thread writes its own: sending
        the writes of threads that met in one pipeline (a group commit) never batched in practice and
        measured slower (bench/group_commit.py, docs/performance.md)."""
        run = self._run(script, args, layout.route) if layout and layout.route else self._run(script, args)
        return self.buffer.write(run, what)

    def _run(self, script: Any, args: list[Any], keys: tuple[str, ...] = ()) -> Callable[[], Any]:
        replicate = script not in (self._page, self._scan, self._records)  # reads need no WAIT
        return lambda: self._scripts.evalsha(script, args, replicate, keys)

    def go_records(self) -> RedisGoRecords:
        """Go-format task records under bare TaskIDs (issue 22, go_records.py). Not on a Redis Cluster: Go
        Cogman has no Cluster support, and a bare TaskID's slot is no shard's (docs/go-interop.md)."""
        if self.on_cluster:
            raise ConfigError("Go-format tasks (wire='go') need one Redis or Sentinel, not a Redis Cluster")
        if self._go is None:
            self._go = RedisGoRecords(self._link())
        return self._go

    def limits(self) -> limiting.RedisLimits:  # rate limits and concurrency slots (limiting.py)
        return limiting.store_of(self)

    create_unique = unique.create_unique
    oldest_queued = oldest.oldest_queued
