"""Go-format task records in Redis (issue 22): Go Cogman's layout, kept atomically.

Go keeps each attempt as a JSON string under the bare TaskID (no prefix), written ``SET`` + ``EXPIRE``
after a ``GET`` with no lock. Here every change is one Lua script that reads the record, applies Go's
rule (a status must outrank the current one, :data:`cogman.gowire.record.GO_RANK`), writes the whole
record back in Go's encoding and refreshes the TTL (``redis_ttl``): no writer, Go's or ours, can lose
another's change. A create is ``SET NX EX``. The scripts re-encode the record field by field as Go's
``encoding/json`` does (Go's field order, its string escapes, ``Duration`` kept as the text it was),
so Go reads ours as its own; tests/integration/test_gowire_redis.py compares them with Go's bytes.

Each script but ``START`` touches one key, the record's own; ``START`` also counts the delivery's start
beside it (``<prefix>:go-starts:<id>`` and ``<prefix>:go-start-token:<id>``, slots of their own): Go-format
tasks are refused on a Redis Cluster (``RedisBackend.go_records``), where that could not run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from cogman.backends.codec import to_us
from cogman.backends.redis.go_scripts import ADD_RETRIES, START, TAKE_RETRY, UPDATE
from cogman.errors import CorruptRecord
from cogman.gowire.record import GO_RANK, GoRecord, go_float, go_time, parse_go_time
from cogman.gowire.store import MAX_LISTED, GoStarted, read_as_task
from cogman.record import TaskRecord, utcnow
from cogman.status import Status

if TYPE_CHECKING:
    from cogman.backends.redis.wire import Link

log = logging.getLogger("cogman.backends.redis")

_RANKS = json.dumps({status.value: rank for status, rank in GO_RANK.items()})
_FINAL = json.dumps({status.value: True for status in Status if status.is_final})
#: The bare keys Go Cogman's records live under: a UUID in lower-case hex (Go's v4, cogman's retry v5).
GO_KEY_PATTERN = "-".join("[0-9a-f]" * n for n in (8, 4, 4, 4, 12))
#: Keys one SCAN call visits: ``MAX_SCANNED`` of them make one search step.
SCAN_COUNT = 1000


class RedisGoRecords:
    """Go records in the Redis database the backend uses; implements ``cogman.gowire.store.GoRecords``.
    Writes go through the backend's write buffer (parked and replayed in order during an outage)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.ttl_seconds = max(1, link.keys.ttl_ms // 1000)
        #: The cogman-side listing of Go records: Go keeps no index (``recent``).
        self.index = link.keys.index("go")
        self._update = link.client.register_script(UPDATE)
        self._retry = link.client.register_script(TAKE_RETRY)
        self._add = link.client.register_script(ADD_RETRIES)
        self._start = link.client.register_script(START)

    def create(self, record: GoRecord) -> bool:
        client, ttl = self.link.client, self.ttl_seconds
        stored = self.link.buffer.write(
            lambda: client.set(record.task_id, record.to_json(), nx=True, ex=ttl),
            f"create Go record {record.task_id}",
        )
        self._listed(record)
        return bool(stored)

    def recent(self, names: frozenset[str] = frozenset()) -> list[GoRecord]:
        if names:
            self.discover(names)
        client, index, floor = self.link.client, self.index, self.link.keys.window_floor()
        newest = lambda: client.zrevrangebyscore(index, "+inf", floor, start=0, num=MAX_LISTED)  # noqa: E731
        listed = self.link.buffer.call(newest, "list Go records")
        ids = [task_id.decode() if isinstance(task_id, bytes) else str(task_id) for task_id in listed]
        if not ids:
            return []
        raws = self.link.buffer.call(lambda: client.mget(ids), "read Go records")
        found = []
        for task_id, raw in zip(ids, raws, strict=True):
            try:
                if raw is not None:
                    found.append(GoRecord.from_json(raw, task_id))
            except CorruptRecord:
                continue  # the bare key holds something else now (MGET gives nil for other types)
        return found

    def discover(self, names: frozenset[str]) -> int:
        """One bounded step of the search for Go records no cogman process created or started (a Go
        client's task run by a Go worker): SCAN the bare-UUID keys from where the last step stopped
        (``<prefix>:go-scan``, any process's), at most ``MAX_SCANNED`` keys, and list the Go records of
        the tasks ``names`` found (``<prefix>:idx:go``). How many it listed. A database of N keys is
        searched through in ceil(N / MAX_SCANNED) steps, so a record Go writes behind the cursor is
        listed within that many listings after it wraps."""
        from cogman.gowire import store

        client, cursor_key, ttl_ms = self.link.client, f"{self.link.keys.prefix}:go-scan", self.link.keys.ttl_ms

        def scan() -> list[Any]:
            cursor = int(client.get(cursor_key) or 0)
            found: list[Any] = []
            for _ in range(max(1, store.MAX_SCANNED // SCAN_COUNT)):
                cursor, keys = client.scan(cursor, match=GO_KEY_PATTERN, count=SCAN_COUNT)
                found.extend(keys)
                if int(cursor) == 0:
                    break
            client.set(cursor_key, int(cursor), px=ttl_ms)
            return found

        keys = [
            key.decode() if isinstance(key, bytes) else str(key)
            for key in self.link.buffer.call(scan, "search Go records")
        ]
        found = []
        for start in range(0, len(keys), SCAN_COUNT):
            chunk = keys[start : start + SCAN_COUNT]
            raws: list[Any] = self.link.buffer.call(partial(client.mget, chunk), "read Go records")
            for key, raw in zip(chunk, raws, strict=True):
                try:
                    record = None if raw is None else GoRecord.from_json(raw, key)
                except CorruptRecord:
                    continue  # a bare key holding something else: not a Go record
                if record is not None and record.task_id == key and record.name in names:
                    found.append(record)
        if found:
            self._listed(*found)
        return len(found)

    def _listed(self, *records: GoRecord) -> None:
        """Index records for listing (``<prefix>:idx:go``, by creation time; entries out of the TTL
        window trimmed): a hint for ``recent``, which reads each record, so it needs no atomicity."""
        client, index, floor = self.link.client, self.index, self.link.keys.window_floor()
        scores = {record.task_id: _created_us(record) for record in records}

        def add() -> None:
            pipe = client.pipeline(transaction=False)
            pipe.zadd(index, scores)
            pipe.zremrangebyscore(index, "-inf", f"({floor}")
            pipe.pexpire(index, self.link.keys.ttl_ms)
            pipe.execute()

        self.link.buffer.write(add, f"list Go record {records[0].task_id}" if len(records) == 1 else "list Go records")

    def update(
        self, task_id: str, status: Status, *, fail_error: str | None = None, duration: float | None = None
    ) -> GoRecord | None:
        if status is Status.SUCCESS:
            duration_text = "null" if duration is None else go_float(duration)
        else:
            duration_text = "null" if status is Status.FAILED else ""
        set_fail = status is Status.FAILED or fail_error is not None
        args = [
            task_id,
            status.value,
            GO_RANK[status],
            _RANKS,
            go_time(),
            "1" if set_fail else "0",
            fail_error or "",
            duration_text,
            self.ttl_seconds,
        ]
        out = self.link.buffer.write(self.link.run(self._update, args), f"move Go task {task_id} to {status}")
        if not out:
            return None
        kind = out[0].decode()
        if kind == "corrupt":
            log.error("not moving Go task %s to %s: its key holds no Go task record", task_id, status)
            return None
        if kind == "unknown":
            return None
        try:
            record = GoRecord.from_json(out[1], task_id)
        except CorruptRecord as exc:
            log.error("Go task %s moved to %s over an unreadable record: %s", task_id, status, exc)
            return None
        if kind == "moved" and status is Status.IN_PROGRESS:
            self._listed(record)  # a Go client's task a cogman worker runs: listed from here on
        return record

    def take_retry(self, original_task_id: str) -> int | None:
        args = [original_task_id, go_time(), self.ttl_seconds]
        left = self.link.buffer.call(self.link.run(self._retry, args), f"take a retry of Go task {original_task_id}")
        if left == -3:
            log.error("no retry for Go task %s: its key holds no Go task record", original_task_id)
        return int(left) if left >= 0 else None

    def add_retries(self, task_id: str, count: int) -> int | None:
        args = [task_id, count, go_time(), self.ttl_seconds]
        out = self.link.buffer.call(self.link.run(self._add, args), f"add {count} retries to Go task {task_id}")
        kind = out[0].decode() if isinstance(out[0], bytes) else str(out[0])
        if kind == "corrupt":
            log.error("no retries added to Go task %s: its key holds no Go task record", task_id)
        return int(out[1]) if kind == "added" else None

    def delete(self, task_ids: Sequence[str]) -> None:
        ids, client, prefix = list(task_ids), self.link.client, self.link.keys.prefix

        def remove() -> None:
            pipe = client.pipeline(transaction=True)
            beside = [f"{prefix}:{kind}:{task_id}" for task_id in ids for kind in ("go-starts", "go-start-token")]
            pipe.delete(*ids, *beside)
            pipe.zrem(self.index, *ids)
            pipe.execute()

        if ids:
            self.link.buffer.write(remove, f"delete {len(ids)} Go record(s)")

    def start(self, task_id: str, token: str) -> GoStarted | None:
        prefix, status = self.link.keys.prefix, Status.IN_PROGRESS
        keys = [f"{prefix}:go-starts:{task_id}", f"{prefix}:go-start-token:{task_id}"]
        args = [task_id, status.value, GO_RANK[status], _RANKS, go_time(), self.ttl_seconds, _FINAL, *keys, token]
        out = self.link.buffer.write(self.link.run(self._start, args), f"start Go task {task_id}")
        if not out:
            return None
        kind, starts = out[0].decode(), int(out[2])
        if kind == "corrupt":
            log.error("not moving Go task %s to %s: its key holds no Go task record", task_id, status)
        if kind not in ("moved", "kept"):
            return GoStarted(None, starts)
        try:
            record = GoRecord.from_json(out[1], task_id)
        except CorruptRecord as exc:
            log.error("Go task %s started over an unreadable record: %s", task_id, exc)
            return GoStarted(None, starts)
        if kind == "moved":
            self._listed(record)  # a Go client's task a cogman worker runs: listed from here on
        return GoStarted(record, starts)

    def get(self, task_id: str) -> GoRecord | None:
        client = self.link.client
        raw = self.link.buffer.call(lambda: _get_string(client, task_id), f"read Go task {task_id}")
        return None if raw is None else GoRecord.from_json(raw, task_id)

    def read_as_task(self, task_id: str) -> TaskRecord | None:
        """The Go record as cogman's readers show it, for ``RedisBackend.get`` when cogman has no record
        under that id; None when the bare key holds anything but a Go record (it is not ours to judge)."""
        return read_as_task(self, task_id)


def _get_string(client: Any, key: str) -> bytes | None:
    """GET, with a key of another type (a hash, a list) read as no record: bare ids share the database
    with anything else an application keeps there."""
    import redis

    try:
        value: bytes | None = client.get(key)
    except redis.ResponseError as exc:
        if "WRONGTYPE" in str(exc):
            return None
        raise
    return value


def _created_us(record: GoRecord) -> int:
    """When the record was created (its ``CreatedAt``; now when Go left none or an unreadable one)."""
    try:
        return to_us(parse_go_time(record.created_at))
    except ValueError:
        return to_us(utcnow())
