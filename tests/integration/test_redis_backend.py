"""The Redis backend against the real Redis on 127.0.0.1 (db 15, flushed before each test).

The contract shared with the other backends is in tests/integration/test_backend_contract.py; here is what is
Redis's own: key layout and TTLs, bounded indexes, atomicity under 50 racing threads, one round trip
per state change, the wake-up list, corrupt records, and a Redis restart in the middle of a run.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import redis

from cogman import App, Config, Status
from cogman.backends.base import TaskQuery
from cogman.backends.codec import to_us
from cogman.backends.memory import MemoryBackend
from cogman.backends.redis import backend as redis_backend
from cogman.backends.redis.backend import RedisBackend
from cogman.errors import CorruptRecord
from cogman.record import TaskRecord, utcnow
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_backend_contract import attempt_of, record
from tests.service_lock import require_exclusive

REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
]


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll state the test cannot be notified of (another component's progress, a server's client list)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def server(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


@pytest.fixture
def make(redis_url: str, server: redis.Redis) -> Iterator[Callable[..., RedisBackend]]:
    made: list[RedisBackend] = []

    def build(**options: Any) -> RedisBackend:
        backend = RedisBackend(redis_url, Config(broker_url="memory://", backend_url=redis_url, **options))
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close()


# Layout and TTLs


def test_one_hash_per_attempt_with_a_ttl_refreshed_on_every_write(make, server: redis.Redis):
    backend = make(redis_ttl=3600, redis_prefix="app1")
    rec = record(primary_key="order-7")
    backend.create([rec])
    key = f"app1:task:{rec.task_id}"
    assert server.type(key) == b"hash"
    assert server.hget(key, "status") == b'"initiated"' and server.hget(key, "payload").startswith(b"{")
    assert 3_590_000 < server.pttl(key) <= 3_600_000
    for index in ("all", "status:initiated", "name:job", "pk:order-7"):
        assert server.zscore(f"app1:idx:{index}", rec.task_id) == to_us(rec.created_at)
        assert 0 < server.pttl(f"app1:idx:{index}") <= 3_600_000
    server.pexpire(key, 5000)
    backend.transition(rec.task_id, Status.IN_PROGRESS)
    assert server.pttl(key) > 3_590_000
    assert server.zscore("app1:idx:status:initiated", rec.task_id) is None
    assert server.zscore("app1:idx:status:in_progress", rec.task_id) is not None


def test_index_entries_older_than_the_ttl_are_trimmed_and_never_listed(make, server: redis.Redis):
    backend = make(redis_ttl=60)
    old, new = record(age=120), record(age=1)
    backend.create([old])
    assert server.zscore("cogman:idx:all", old.task_id) is None  # trimmed by the very write that added it
    backend.create([new])
    assert backend.get(old.task_id) == old  # the record itself lives its TTL from its last write
    assert [r.task_id for r in backend.query(TaskQuery()).records] == [new.task_id]
    assert backend.count_by_status(utcnow() - timedelta(seconds=300), utcnow(), 600)[0].total == 1
    for key in server.scan_iter("cogman:idx:*"):
        assert 0 < server.pttl(key) <= 60_000, key


def test_a_status_that_arrives_before_its_record_is_applied_when_the_record_is_created(make, server):
    """After an outage, another process may replay its transitions before this one replays the create."""
    backend = make()
    rec = record()
    assert backend.transition(rec.task_id, Status.IN_PROGRESS) is None
    assert backend.transition(rec.task_id, Status.SUCCESS, result=5, duration=0.5) is None
    backend.create([rec])
    stored = backend.get(rec.task_id)
    assert stored is not None and stored.status is Status.SUCCESS and stored.result == 5
    assert server.exists(f"cogman:early:{rec.task_id}") == 0
    assert server.zscore("cogman:idx:status:success", rec.task_id) is not None
    assert backend.wait(rec.task_id, 5).status is Status.SUCCESS  # type: ignore[union-attr]


# Atomicity and round trips


def race(threads_count: int, action: Callable[[int], object]) -> None:
    """Run ``action(i)`` in ``threads_count`` threads released together by a barrier."""
    barrier = threading.Barrier(threads_count)

    def run(i: int) -> None:
        barrier.wait(10)
        action(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads)


def test_fifty_threads_racing_to_move_one_task_leave_the_highest_rank(make, server: redis.Redis):
    backend = make()
    order = [Status.QUEUED, Status.IN_PROGRESS, Status.RETRY, Status.FAILED, Status.SUCCESS]
    for _ in range(10):
        rec = record()
        backend.create([rec])
        race(
            50,
            lambda i, task_id=rec.task_id: backend.transition(
                task_id, order[i % len(order)], fail_error=f"by {order[i % len(order)]}"
            ),
        )
        final = backend.get(rec.task_id)
        assert final is not None and final.status in (Status.FAILED, Status.SUCCESS)
        assert final.fail_error == f"by {final.status}"  # fields written with the winning status only
        members = [s for s in Status if server.zscore(f"cogman:idx:status:{s.value}", rec.task_id) is not None]
        assert members == [final.status]


def test_retry_budget_races_with_the_failed_write_and_both_survive(make):
    """The seed system lost the original's ``failed`` to a concurrent budget update; and could go below 0."""
    backend = make()
    original = record(retry=10)
    backend.create([original])
    spent: list[int | None] = []

    def act(i: int) -> None:
        if i == 50:
            backend.transition(original.task_id, Status.FAILED, fail_error="RuntimeError: x")
        else:
            spent.append(backend.spawn_retry(original.task_id, attempt_of(original, 2)))

    race(51, act)
    granted = sorted(left for left in spent if left is not None)
    assert granted == list(range(10))
    stored = backend.get(original.task_id)
    assert stored is not None and stored.retry == 0 and stored.status is Status.FAILED
    assert backend.query(TaskQuery(status=Status.RETRY)).total == 10


def test_every_state_change_is_one_round_trip(make, server: redis.Redis, monkeypatch: pytest.MonkeyPatch):
    backend = make()
    for script in (backend._create, backend._transition, backend._spawn):
        server.script_load(script.script)  # a script the server never saw costs a SCRIPT LOAD, once
    calls: list[str] = []
    real = redis.connection.Connection.send_packed_command

    def counting(self: Any, command: Any, *args: Any, **options: Any) -> Any:
        chunks = [command] if isinstance(command, (bytes, str)) else list(command)
        packed = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
        name = packed.split(b"\r\n")[2].decode()  # *<n>, $<len>, then the first command's name
        if name not in ("HELLO", "CLIENT", "SELECT", "AUTH"):  # a new connection's handshake
            calls.append(name)
        return real(self, command, *args, **options)

    # every socket write, whoever packed it (redis-py or hiredis directly): one write, one round trip
    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    records = [record(retry=1) for _ in range(300)]
    backend.create(records)
    assert calls == ["EVALSHA"]
    backend.create([record()], meanwhile=lambda: None)  # a .delay(): the reply is read after the publish
    assert calls == ["EVALSHA"] * 2
    backend.transition_many([r.task_id for r in records], Status.QUEUED)
    backend.transition(records[0].task_id, Status.FAILED, fail_error="E: x", duration=1.0)
    backend.spawn_retry(records[0].task_id, attempt_of(records[0], 2))
    assert calls == ["EVALSHA"] * 5


def test_the_create_reply_is_read_after_what_the_client_does_meanwhile(make, server: redis.Redis):
    """The command is written, the client publishes, and only then is Redis's reply read: one round trip's
    wait per ``.delay()`` instead of two, still one socket write for the create."""
    backend = make()
    events: list[str] = []
    real_send = backend._scripts.send

    def send(script: Any, args: list[Any]) -> Callable[[], Any]:
        reply = real_send(script, args)
        events.append("create written")

        def read() -> Any:
            events.append("reply read")
            return reply()

        return read

    backend._scripts.send = send  # type: ignore[method-assign]
    rec = record()
    assert backend.create([rec], meanwhile=lambda: events.append("meanwhile")) is True
    assert events == ["create written", "meanwhile", "reply read"]
    assert server.exists(backend.key(rec.task_id))


def test_an_overlapped_create_whose_reply_never_comes_is_parked_and_replayed(make, redis_url: str):
    """Redis goes away after the create was written: the reply never comes, the write is retried, then
    parked, and lands once Redis is back; ``meanwhile`` ran once all the same."""
    proxy = TcpProxy(6379)
    proxy.start()
    try:
        db = redis_url.rsplit("/", 1)[-1]
        backend = make()
        backend.close()
        backend = RedisBackend(
            f"redis://127.0.0.1:{proxy.port}/{db}", Config(broker_url="memory://"), retry_seconds=0.1
        )
        backend.create([record()], meanwhile=lambda: None)  # connects (both of this thread's connections)
        real_send = backend._scripts.send

        def send_then_lose_redis(script: Any, args: list[Any]) -> Callable[[], Any]:
            proxy.freeze()  # the command goes no further and no reply comes back before the reset
            reply = real_send(script, args)
            proxy.kill()
            return reply

        backend._scripts.send = send_then_lose_redis  # type: ignore[method-assign]
        rec, calls = record(), []
        assert backend.create([rec], meanwhile=lambda: calls.append(1)) is False  # parked
        assert calls == [1] and backend.buffer.pending == 1
        proxy.thaw()
        proxy.start()
        assert backend.flush(30)
        stored = backend.get(rec.task_id)
        assert stored is not None and stored.status is Status.INITIATED
        backend.close()
    finally:
        proxy.thaw()
        proxy.kill()


def test_an_overlapped_create_reads_its_reply_itself_when_an_outage_begins_meanwhile(make, server: redis.Redis):
    """Another thread's write parked between this create's send and its reply must not make this one
    park too: its reply would then be read by the replay thread, off a connection this thread owns."""
    backend = make()
    backend.buffer.retry_seconds = 0.05
    up = threading.Event()

    def away() -> None:
        if not up.is_set():
            raise redis.ConnectionError("away")

    real_send = backend._scripts.send

    def send_then_another_thread_parks(script: Any, args: list[Any]) -> Callable[[], Any]:
        reply = real_send(script, args)
        backend.buffer.park(away, "another thread's write")
        return reply

    backend._scripts.send = send_then_another_thread_parks  # type: ignore[method-assign]
    rec = record()
    assert backend.create([rec], meanwhile=lambda: None) is True  # in the store, not parked
    assert server.exists(backend.key(rec.task_id)) and backend.buffer.pending == 1
    up.set()
    assert backend.flush(10)


def test_an_overlapped_create_after_a_script_flush_loads_the_script_again(make, server: redis.Redis):
    backend = make()
    backend.create([record()])
    server.script_flush()
    rec, calls = record(), []
    assert backend.create([rec], meanwhile=lambda: calls.append(1)) is True
    assert calls == [1] and server.exists(backend.key(rec.task_id))


# Queries
def logging_sends(
    backend: RedisBackend,
    events: list[str],
    fault: Callable[[int, list[Any]], None] | None = None,
    reply_fault: Callable[[int], None] | None = None,
):
    """Wrap the overlapped create's sends: log each slice sent (its record count) and each reply read;
    ``fault(n, args)`` runs before the n-th send (from 1) and may raise or change the args;
    ``reply_fault(n)`` runs after the n-th reply was read and may raise."""
    real_send = backend._scripts.send
    sent = 0

    def send(script: Any, args: list[Any]) -> Callable[[], Any]:
        nonlocal sent
        sent += 1
        number = sent
        if fault is not None:
            fault(number, args)
        reply = real_send(script, args)
        events.append(f"sent {args[4]}")

        def read() -> Any:
            events.append("read")
            out = reply()
            if reply_fault is not None:
                reply_fault(number)
            return out

        return read

    backend._scripts.send = send  # type: ignore[method-assign]


def test_a_large_overlapped_create_goes_out_in_slices_all_before_the_publish(make, server: redis.Redis):
    """Redis starts on the first slice while the sender encodes the next ones; every reply is read after
    the publish, in order, on the thread's own connection."""
    backend = make()
    events: list[str] = []
    logging_sends(backend, events)
    records = [record() for _ in range(250)]
    assert backend.create(records, meanwhile=lambda: events.append("meanwhile")) is True
    assert events == ["sent 100", "sent 100", "sent 50", "meanwhile", "read", "read", "read"]
    assert all(server.exists(backend.key(r.task_id)) for r in records)


def test_a_connection_lost_while_sending_a_later_slice_writes_every_slice_through_the_write_path(make, server):
    """The failed send closed the connection, so the first slice's reply is gone too: every slice takes
    the write path (idempotent: the first may have run already), and nothing is missing."""
    backend = make()
    events: list[str] = []

    def lose_the_connection(n: int, args: list[Any]) -> None:
        if n == 2:
            backend._scripts._connection("pending").disconnect()
            raise redis.ConnectionError("connection lost while sending")

    logging_sends(backend, events, lose_the_connection)
    records = [record() for _ in range(250)]
    assert backend.create(records, meanwhile=lambda: events.append("meanwhile")) is True
    assert events == ["sent 100", "meanwhile", "read"]  # the slices after the failed send were not sent
    assert all(server.exists(backend.key(r.task_id)) for r in records) and backend.buffer.pending == 0
    backend.create([rec := record()], meanwhile=lambda: None)  # the thread's connection works again
    assert server.exists(backend.key(rec.task_id))


def test_an_error_reply_for_one_slice_is_raised_after_the_publish_and_the_other_slices_land(make, server):
    backend = make()
    events: list[str] = []

    def break_the_second_slice(n: int, args: list[Any]) -> None:
        if n == 2:
            args[4] = "not a count"  # the script fails on this slice alone

    logging_sends(backend, events, break_the_second_slice)
    records = [record() for _ in range(250)]
    with pytest.raises(redis.ResponseError):
        backend.create(records, meanwhile=lambda: events.append("meanwhile"))
    assert events == ["sent 100", "sent not a count", "sent 50", "meanwhile", "read", "read", "read"]
    landed = [server.exists(backend.key(r.task_id)) == 1 for r in records]
    assert landed == [True] * 100 + [False] * 100 + [True] * 50
    backend.create([rec := record()], meanwhile=lambda: None)  # every reply was read: still in step
    assert server.exists(backend.key(rec.task_id))


def test_a_failover_reply_for_one_slice_writes_it_again_and_the_later_replies_are_still_read(make, server):
    """A transient error reply (READONLY during a failover) leaves the connection in step: that slice
    takes the write path, and the replies after it must still be read, or the next call on this
    connection would read them as its own."""
    backend = make()
    events: list[str] = []

    def read_only_once(n: int) -> None:
        if n == 2:  # the reply was consumed; Redis answered this slice with an error instead
            raise redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica.")

    logging_sends(backend, events, reply_fault=read_only_once)
    records = [record() for _ in range(250)]
    assert backend.create(records, meanwhile=lambda: events.append("meanwhile")) is True
    assert events == ["sent 100", "sent 100", "sent 50", "meanwhile", "read", "read", "read"]
    assert all(server.exists(backend.key(r.task_id)) for r in records) and backend.buffer.pending == 0


def test_a_slice_whose_reply_is_unusable_abandons_the_rest_so_no_later_call_reads_them(make, server):
    """The first slice's reply was read but its call failed without an error reply (a script reloaded
    on the other connection after a SCRIPT FLUSH, and that connection broke): the later replies are not
    read, so the connection is closed, and every slice goes down the write path."""
    backend = make()
    events: list[str] = []

    def broken_after_reading(n: int) -> None:
        if n == 1:
            raise redis.ConnectionError("the other connection broke while reloading the script")

    logging_sends(backend, events, reply_fault=broken_after_reading)
    records = [record() for _ in range(250)]
    assert backend.create(records, meanwhile=lambda: events.append("meanwhile")) is True
    assert events == ["sent 100", "sent 100", "sent 50", "meanwhile", "read"]
    assert backend._scripts._local.pending._sock is None  # closed with the two replies it still owed
    assert all(server.exists(backend.key(r.task_id)) for r in records) and backend.buffer.pending == 0


def test_a_batch_trims_and_expires_each_index_once_and_old_entries_still_go(private_redis):
    """On a Redis of its own: the command counts are server-wide."""
    url, server = private_redis
    backend = RedisBackend(url, Config(broker_url="memory://", backend_url=url, redis_ttl=60))
    server.config_resetstat()
    fresh, old = [record() for _ in range(200)], record(age=120)
    backend.create([*fresh, old])
    stats = server.info("commandstats")
    assert stats["cmdstat_zadd"]["calls"] == 4 * 201  # all, status, name, name-and-status
    assert stats["cmdstat_zremrangebyscore"]["calls"] == 4  # once per index key, not once per record
    assert [r.task_id for r in backend.query(TaskQuery(limit=500)).records].count(old.task_id) == 0
    backend.create([record()])  # the next write to the index trims what the batch added late
    assert server.zscore("cogman:idx:all", old.task_id) is None
    for key in server.scan_iter("cogman:idx:*"):
        assert 0 < server.pttl(key) <= 60_000, key
    backend.close()


# Queries


def test_queries_page_through_hundreds_of_records_with_totals(make, server: redis.Redis):
    backend = make()
    now = utcnow()
    records = [
        record("batch" if i % 3 else "other", age=i * 0.01, now=now, primary_key=f"k{i % 5}") for i in range(300)
    ]
    backend.create(records)
    backend.transition_many([r.task_id for r in records[:100]], Status.QUEUED)
    seen: list[str] = []
    for skip in range(0, 300, 70):
        page = backend.query(TaskQuery(skip=skip, limit=70))
        assert page.total == 300
        seen += [r.task_id for r in page.records]
    assert seen == [r.task_id for r in records]
    page = backend.query(TaskQuery(name="batch", status=Status.QUEUED, primary_key="k1", limit=5))
    expected = [r.task_id for i, r in enumerate(records[:100]) if i % 3 and i % 5 == 1]
    assert page.total == len(expected) and [r.task_id for r in page.records] == expected[:5]
    assert list(server.scan_iter("cogman:scratch:*")) == []


def test_counts_per_bucket_agree_with_the_reference_on_both_counting_paths(make):
    backend, reference = make(), MemoryBackend()
    now = utcnow()
    records = [record(age=i * 0.02, now=now) for i in range(2500)]
    backend.create(records)
    reference.create(records)
    for rec in records[::7]:
        backend.transition(rec.task_id, Status.SUCCESS)
        reference.transition(rec.task_id, Status.SUCCESS)
    start, end = records[-1].created_at, records[0].created_at
    for width in (5.0, 0.5, 0.013):  # ZCOUNT per bucket for wide buckets, scores fetched for narrow ones
        assert backend.count_by_status(start, end, width) == reference.count_by_status(start, end, width)


# Waiting


def test_many_waiters_wake_when_another_thread_finishes_the_task(make, server, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(redis_backend, "WAIT_SLICE", 120.0)  # only the wake-up token can end the waits in time
    backend = make()
    rec = record()
    backend.create([rec])
    results: list[TaskRecord | None] = []

    def waiter() -> None:
        results.append(backend.wait(rec.task_id, 120))

    threads = [threading.Thread(target=waiter) for _ in range(10)]
    for thread in threads:
        thread.start()

    db = str(server.connection_pool.connection_kwargs.get("db", 0))

    def blocked() -> int:
        return sum(1 for c in server.client_list() if c.get("cmd") == "blpop" and c.get("db") == db)

    wait_until(lambda: blocked() >= 10, 30, "10 waiters blocked in BLPOP")
    backend.transition(rec.task_id, Status.SUCCESS, result=[1, 2])
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(results) == 10 and all(r is not None and r.result == [1, 2] for r in results)


# Bad data


def test_corrupt_and_foreign_records_give_a_clear_error_and_do_not_break_anything(make, server, caplog):
    backend = make()
    good = record(age=1)
    backend.create([good])
    as_string, foreign, bad_json = (str(uuid.uuid4()) for _ in range(3))
    server.set(f"cogman:task:{as_string}", "hello")
    server.hset(f"cogman:task:{foreign}", mapping={"status": '"done"', "owner": "someone else"})
    server.hset(f"cogman:task:{bad_json}", mapping={"status": '"queued"', "payload": "{not json"})
    score = to_us(utcnow())
    for task_id in (as_string, foreign, bad_json):
        server.zadd("cogman:idx:all", {task_id: score})
    for task_id in (as_string, foreign, bad_json):
        with pytest.raises(CorruptRecord) as caught:
            backend.get(task_id)
        assert caught.value.key == f"cogman:task:{task_id}"
    page = backend.query(TaskQuery())
    assert [r.task_id for r in page.records] == [good.task_id] and page.total == 4
    assert "query skipped" in caplog.text
    assert backend.transition(as_string, Status.FAILED) is None
    assert backend.transition(foreign, Status.FAILED) is None
    assert backend.spawn_retry(as_string, attempt_of(good, 2)) is None
    assert f"corrupt record at cogman:task:{foreign}" in caplog.text
    assert server.get(f"cogman:task:{as_string}") == b"hello"  # never overwritten


# Redis going away


def redis_up() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except redis.ConnectionError:
        return False


@contextmanager
def redis_stopped() -> Iterator[None]:
    """Redis shut down (``nosave``: it comes back empty) for the body; always started again."""
    require_exclusive("shutting Redis down")
    subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"], capture_output=True, timeout=30
    )
    try:
        wait_until(lambda: not redis_up(), 30, "Redis to stop")
        yield
    finally:
        if not redis_up():
            subprocess.run(REDIS_START, cwd="/tmp", check=True, capture_output=True, timeout=30)
        wait_until(redis_up, 30, "Redis to accept connections again")


@pytest.mark.slow
@pytest.mark.disruptive
def test_a_redis_restart_during_a_run_loses_no_status(redis_url: str, server: redis.Redis):
    app = App("redis-restart", broker="memory://", backend=redis_url, concurrency=4)
    first_half, second_half = threading.Event(), threading.Event()

    @app.task(name="restart.work")
    def work(index: int) -> int:
        (first_half if index < 10 else second_half).wait(60)
        return index * 2

    worker = app.start_background(concurrency=4)
    try:
        with redis_stopped():
            results = [work.delay(i) for i in range(20)]  # records and statuses buffered in memory
            first_half.set()
            wait_until(lambda: worker.outcomes["succeeded"] >= 10, 60, "the first 10 tasks to finish")
        server.flushdb()  # a fresh, empty Redis: everything in it from now on came from the replay
        second_half.set()
        backend = app.backend
        assert isinstance(backend, RedisBackend)
        wait_until(lambda: worker.outcomes["succeeded"] == 20, 60, "all 20 tasks to finish")
        assert backend.flush(60)
        assert [r.get(timeout=30) for r in results] == [i * 2 for i in range(20)]
        assert backend.query(TaskQuery(status=Status.SUCCESS, name="restart.work")).total == 20
    finally:
        first_half.set()
        second_half.set()
        worker.stop()
        app.close()


# Failover and busy replies: a private redis-server of the test's own (the shared one is never touched)


def test_a_read_only_replica_is_a_failover_not_a_failure(private_redis: tuple[str, redis.Redis]):
    """READONLY (a demoted primary) parks the write; once promoted, it is replayed, never failed for good."""
    url, admin = private_redis
    admin.execute_command("REPLICAOF", "127.0.0.1", "1")  # a master that never answers: read-only
    backend = RedisBackend(url, Config(broker_url="memory://", backend_url=url), retry_seconds=0.2)
    try:
        rec = record()
        fired: list[str | None] = []
        backend.create([rec])
        backend.durable(fired.append)
        assert backend.buffer.pending == 1 and fired == []
        admin.execute_command("REPLICAOF", "NO", "ONE")  # promoted
        assert backend.flush(30)
        assert fired == [None] and backend.get(rec.task_id) == rec
    finally:
        backend.close()


def test_a_busy_server_is_waited_for(private_redis: tuple[str, redis.Redis]):
    """BUSY (a long script runs) is transient too: the write lands once the script is killed."""
    url, admin = private_redis
    admin.config_set("busy-reply-threshold", 50)
    runner = threading.Thread(target=lambda: _run_forever(url), daemon=True)
    runner.start()
    wait_until(lambda: _busy(admin), 30, "the private server to reply BUSY")
    backend = RedisBackend(url, Config(broker_url="memory://", backend_url=url), retry_seconds=0.2)
    try:
        rec = record()
        backend.create([rec])
        assert backend.buffer.pending == 1
        redis.Redis.from_url(url).script_kill()
        assert backend.flush(30) and backend.get(rec.task_id) == rec
    finally:
        backend.close()


def _run_forever(url: str) -> None:
    with contextlib.suppress(redis.RedisError):
        redis.Redis.from_url(url).eval("while true do end", 0)


def _busy(client: redis.Redis) -> bool:
    try:
        client.get("probe")
    except redis.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


def test_handler_writes_parked_during_an_outage_are_replayed_one_by_one(make, server: redis.Redis):
    """Each handler write is parked on its own: the bound counts writes, and a replayed write that fails
    for good reaches the barrier (a group commit once replayed a pipeline as one write, whose error
    replies it swallowed: their messages were acked with the outcome unrecorded)."""
    from cogman.backends import codec
    from cogman.backends.redis import scripts

    backend = make()
    backend.buffer.retry_seconds = 0.05
    good = record()
    backend.create([good])
    up = threading.Event()

    def away() -> None:
        if not up.is_set():
            raise redis.ConnectionError("away")

    def moved_to_queued(task_id: str, field_count: Any = 2) -> tuple[Any, list[Any], str]:
        now = codec.dumps(utcnow().isoformat())
        fields = ["updated_at", now, codec.AT + Status.QUEUED.value, now]
        args = [*backend._common(), scripts.encoded(Status.QUEUED), "0", field_count, *fields, task_id]
        return backend._transition, args, f"move task {task_id} to queued"

    backend.buffer.park(away, "hold the queue")
    broken = moved_to_queued(str(uuid.uuid4()), field_count="two")  # the script fails for good on it
    assert backend._committed(*moved_to_queued(good.task_id)) is None
    assert backend._committed(*broken) is None
    assert backend.buffer.pending == 3
    fired: list[str | None] = []
    backend.durable(fired.append)
    up.set()
    assert backend.flush(10)
    assert len(fired) == 1 and "failed: ResponseError" in str(fired[0])
    assert backend.get(good.task_id).status is Status.QUEUED  # type: ignore[union-attr]


def test_script_connections_of_ended_threads_are_closed(make):
    """Scripts run on a connection of the calling thread; threads that come and go (API requests,
    re-enqueue passes) must not leave a Redis connection each behind."""
    backend = make()
    for _ in range(3):
        thread = threading.Thread(target=lambda: backend.create([record()]))
        thread.start()
        thread.join()
    backend.create([record()])  # this thread's first call: the ended threads' connections are closed
    assert len(backend._scripts._connections) == 1


def test_a_start_reply_never_read_is_not_taken_by_the_next_start(redis_url: str):
    """A worker whose handler path raised between sending a start and reading it leaves its reply on the
    thread's connection: the next start drops that connection instead of reading the stale reply (the
    unread start may or may not have landed: its delivery goes back to the broker and starts again)."""
    redis.Redis.from_url(redis_url).flushdb()
    backend = RedisBackend(redis_url, Config(broker_url="memory://", backend_url=redis_url))
    try:
        one, two = record(retry=1), record(retry=2)
        backend.create([one, two])
        backend.start_soon(one.task_id, "t1")  # never read
        started = backend.start_soon(two.task_id, "t2")()
        assert started is not None and (started.original_task_id, started.retries_left) == (two.task_id, 2)
        assert backend.start_soon(one.task_id, "t1")().original_task_id == one.task_id  # type: ignore[union-attr]
    finally:
        backend.close()
