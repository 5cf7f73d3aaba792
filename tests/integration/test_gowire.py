"""A mixed fleet with Go Cogman (issue 22) on the real RabbitMQ and Redis.

Go client -> cogman worker: the messages Go's ``SendTask`` published (go-wire/messages.json) are
published again exactly as captured (the same three properties, headers and body, the same ids), with
the records Go's client left in Redis, to a real ``cogman worker`` process; what its handlers receive
and the records it leaves are compared with what Go's own server did (records-run.json,
records-retry.json, unknown-task.json), ids, times and durations aside. cogman client -> Go workers:
what ``.delay(payload)`` of a ``wire="go"`` task publishes and records, compared with Go's client
(messages.json, records-send.json). Readers: ``AsyncResult`` on a record a Go worker moves.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
import redis

from cogman import App
from cogman.backends.base import TaskQuery
from cogman.backends.go_query import list_tasks
from cogman.gowire.record import GoRecord, go_retry_id, go_time
from cogman.status import Status
from tests.gowire_vectors import load, message, shape

ROOT = Path(__file__).resolve().parents[2]
CAPTURED = ("high_json", "low_raw", "retry_pk", "unknown_name")


def amqp_channel(url: str) -> Any:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    connection = amqp.Connection(
        f"{parts.hostname}:{parts.port or 5672}",
        userid=parts.username or "guest",
        password=parts.password or "guest",
        virtual_host=unquote(parts.path[1:]) or "/",
    )
    connection.connect()
    return connection


@pytest.fixture
def go_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def worker(rabbit: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    runs = tmp_path / "runs.jsonl"
    runs.touch()
    process = subprocess.Popen(
        [sys.executable, "-m", "cogman", "-A", "tests.integration.gowire_app", "worker", "-c", "2",
         "--broker", rabbit, "--backend", redis_url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "GOWIRE_RUNS": str(runs)},
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if "ready:" in line:
            break
    else:
        pytest.fail(f"the worker never said ready: {process.communicate(timeout=30)}")
    yield process, runs
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=10)


def publish_as_captured(url: str, names: tuple[str, ...]) -> None:
    """Each captured message as Go sent it: headers (long strings, in the capture's order),
    delivery_mode 2, message_id; the body untouched; to the default exchange."""
    connection = amqp_channel(url)
    try:
        channel = connection.channel()
        channel.confirm_select()
        for name in names:
            captured = message(name)
            headers = {key: entry["value"] for key, entry in captured["headers"].items()}
            properties = {key: entry["value"] for key, entry in captured["properties"].items()}
            body = base64.b64decode(captured["body_base64"])
            channel.basic_publish_confirm(
                amqp.Message(body, application_headers=headers, **properties),
                exchange=captured["exchange"],
                routing_key=captured["routing_key"],
            )
    finally:
        connection.close()


def chain_ids(original: str, length: int) -> list[str]:
    ids = [original]
    for _ in range(length):
        ids.append(go_retry_id(ids[-1]))
    return ids


def test_a_cogman_worker_runs_gos_messages_as_gos_server_did(
    worker: tuple[subprocess.Popen[str], Path], rabbit: str, redis_url: str, go_redis: redis.Redis
):
    _, runs = worker
    sent = load("records-send")["records"]
    retry_chain = chain_ids(message("retry_pk")["task_id"], 3)
    go_redis.delete(*[message(name)["task_id"] for name in CAPTURED], *retry_chain)
    for name in CAPTURED:  # what Go's client left in Redis for each message: the record, queued
        go_redis.set(sent[name]["key"], sent[name]["raw"], ex=3600)
    publish_as_captured(rabbit, CAPTURED)

    reader = App("gowire-reader", broker=rabbit, backend=redis_url)
    try:
        awaited = [message(name)["task_id"] for name in CAPTURED] + retry_chain[1:3]
        for task_id in awaited:  # the last retry's end is the chain's
            record = reader.backend.wait(task_id, 60)
            assert record is not None and record.status.is_final, (task_id, record)
        finals = {task_id: go_redis.get(task_id) for task_id in awaited}
        unknown_id = message("unknown_name")["task_id"]
        dead = [d for d in reader.broker.dead_letters() if d.headers.get("TaskID") == unknown_id]
        listed = list_tasks(reader.backend, TaskQuery(name="gowire.echo", status=Status.SUCCESS, limit=1000)).records
    finally:
        reader.close()

    # The handlers received the bodies as sent: sync, async (the low one), and three runs of the failing one.
    ran = [json.loads(line) for line in runs.read_text().splitlines()]
    expected_runs = [("gowire.echo", "eyJ4IjoxfQ=="), ("gowire.echo_low", "aGVsbG8gcmF3")]
    expected_runs += [("gowire.fail", message("retry_pk")["body_base64"])] * 3
    assert sorted((r["name"], r["payload_b64"]) for r in ran) == sorted(expected_runs)

    # Success: Go's record shape, with a Duration, as Go's server left it (records-run.json).
    run_final = load("records-run")["record_final"]["raw"]
    high = finals[message("high_json")["task_id"]]
    assert shape(high) == {**shape(run_final), "PrimaryKey": ""} and json.loads(high)["Duration"] > 0
    assert list(json.loads(high)) == list(json.loads(run_final))
    assert json.loads(finals[message("low_raw")["task_id"]])["Status"] == "success"
    assert message("high_json")["task_id"] in [r.task_id for r in listed]  # a Go client's task, run here

    # The retry chain, the Go way, but the original keeps its failed (Go's race left it in_progress).
    captured = load("records-retry")
    original = finals[retry_chain[0]]
    assert shape(original) == {**shape(captured["original_failed"]["raw"]), "Retry": 0}
    for retry_id, go_retry in zip(retry_chain[1:3], captured["retry_records"], strict=True):
        assert shape(finals[retry_id]) == shape(go_retry["raw"])
        assert json.loads(finals[retry_id])["OriginalTaskID"] == retry_chain[0]
    assert go_redis.get(retry_chain[3]) is None  # the budget (Retry 2) is spent: 3 runs in all
    assert 0 < go_redis.ttl(retry_chain[1]) <= 604_800  # redis_ttl, refreshed at each write

    # No Go-wire task for the name: dead-lettered once, with a reason naming it; the record says why.
    assert len(dead) == 1 and "'gowire.unknown'" in dead[0].headers["x-cogman-dead-letter-reason"]
    unknown = json.loads(finals[message("unknown_name")["task_id"]])
    assert unknown["Status"] == "failed" and "gowire.unknown" in unknown["FailError"]
    assert list(unknown) == list(json.loads(load("unknown-task")["record_final"]["raw"]))


@pytest.fixture
def sender(rabbit: str, redis_url: str) -> Iterator[App]:
    app = App("gowire-sender", broker=rabbit, backend=redis_url, send_mode="confirmed")

    @app.task(name="gowire.echo", wire="go")
    def echo(payload: bytes) -> None:  # runs on Go workers: never here
        raise AssertionError("not run here")

    yield app
    app.close()


def test_delay_of_a_go_wire_task_publishes_and_records_what_gos_client_does(
    sender: App, rabbit: str, go_redis: redis.Redis
):
    captured = message("high_json")
    result = sender.tasks["gowire.echo"].delay(b'{"x":1}')
    assert result.wait_sent(30)
    connection = amqp_channel(rabbit)
    try:
        got = connection.channel().basic_get(captured["queue"], no_ack=True)
    finally:
        connection.close()
    assert got is not None and got.body == base64.b64decode(captured["body_base64"])
    properties = dict(got.properties)
    headers = properties.pop("application_headers")
    assert set(properties) == {"delivery_mode", "message_id"}  # no content_type, no content_encoding
    assert properties == {"delivery_mode": 2, "message_id": result.id}
    assert headers == {"TaskName": "gowire.echo", "TaskID": result.id}

    stored = go_redis.get(result.id)
    expected = load("records-send")["records"]["high_json"]["raw"]
    assert shape(stored) == shape(expected) and list(json.loads(stored)) == list(json.loads(expected))
    assert 0 < go_redis.ttl(result.id) <= 604_800


def test_async_result_follows_a_go_record_that_a_go_worker_moves(sender: App, go_redis: redis.Redis):
    result = sender.tasks["gowire.echo"].send(args=(b"hello raw",), primary_key="pk-1")
    assert result.status is Status.QUEUED
    record = GoRecord.from_json(go_redis.get(result.id), result.id)
    for status, extra in ((Status.IN_PROGRESS, {}), (Status.SUCCESS, {"duration": 1.000074091})):
        record = record.evolve(status=status, updated_at=go_time(), **extra)
        go_redis.set(result.id, record.to_json(), ex=3600)  # as Go's server writes: SET (then EXPIRE)
        assert result.status is status
    assert result.get(timeout=10) is None  # Go stores no result
    assert sender.backend.get(result.id).primary_key == "pk-1"


@pytest.fixture
def go_store(redis_url: str) -> Iterator[Any]:
    from cogman.backends.redis.backend import RedisBackend
    from cogman.config.settings import Config

    backend = RedisBackend(redis_url, Config(redis_ttl=3600))
    yield backend.go_records()
    backend.close()


def test_the_lua_scripts_write_the_bytes_gos_encoder_writes(go_store: Any, go_redis: redis.Redis):
    """Redis re-encodes the record in Lua; it must be what Go (and cogman/gowire/record.py) writes,
    whatever the strings hold."""
    odd = 'order <42> & "co"\\\n\t\x01\u2028é'
    record = GoRecord.new("lua-bytes-1", f"gowire.{odd}", odd.encode(), primary_key=odd, retry=3)
    go_redis.delete(record.task_id)
    assert go_store.create(record) and not go_store.create(record)
    assert go_redis.get(record.task_id).decode() == record.to_json()
    for status, changes in (
        (Status.IN_PROGRESS, {}),
        (Status.FAILED, {"fail_error": odd}),
    ):
        moved = go_store.update(record.task_id, status, **changes)
        stored = go_redis.get(record.task_id).decode()
        record = record.evolve(status=status, updated_at=moved.updated_at, **changes)
        assert stored == record.to_json() == moved.to_json()
    assert go_store.take_retry(record.task_id) == 2
    assert (
        go_redis.get(record.task_id).decode()
        == record.evolve(retry=2, updated_at=go_store.get(record.task_id).updated_at).to_json()
    )
    success = GoRecord.new("lua-bytes-2", "gowire.echo", b"", status=Status.RETRY)
    go_redis.delete(success.task_id)
    go_store.create(success)
    assert go_store.update(success.task_id, Status.IN_PROGRESS).status is Status.RETRY  # Go's rank
    done = go_store.update(success.task_id, Status.SUCCESS, duration=1.000074091)
    assert json.loads(go_redis.get(success.task_id))["Duration"] == 1.000074091 and done.duration == 1.000074091
    assert b'"Duration":1.000074091,' in go_redis.get(success.task_id)
    assert 3500 < go_redis.ttl(success.task_id) <= 3600


def test_a_status_write_and_retry_decrements_racing_lose_nothing(go_store: Any, go_redis: redis.Redis):
    """Go's read-modify-write lost the original's failed under its own decrement (records-retry.json);
    each change here is one script: failed stays, and every decrement counts."""
    import threading

    record = GoRecord.new("race-1", "gowire.fail", b"x", retry=300, status=Status.INITIATED)
    go_redis.delete(record.task_id)
    go_store.create(record)
    go_store.update(record.task_id, Status.IN_PROGRESS)
    start = threading.Barrier(3)

    def decrement() -> None:
        start.wait()
        for _ in range(100):
            go_store.take_retry(record.task_id)

    threads = [threading.Thread(target=decrement) for _ in range(2)]
    for thread in threads:
        thread.start()
    start.wait()
    go_store.update(record.task_id, Status.FAILED, fail_error="asked to fail")
    for thread in threads:
        thread.join()
    final = go_store.get(record.task_id)
    assert (final.status, final.retry, final.fail_error) == (Status.FAILED, 100, "asked to fail")


def test_rest_get_and_cogman_status_show_a_go_task_beside_cogmans(
    sender: App, redis_url: str, go_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
):
    import httpx

    from cogman.api import create_app
    from cogman.cli.main import main
    from tests.integration.api_helpers import serving

    result = sender.tasks["gowire.echo"].send(args=(b'{"x":1}',), primary_key="order-7")
    with serving(create_app(sender)) as base:
        answer = httpx.get(f"{base}/get", params={"task_id": result.id}, timeout=30)
        listed = httpx.get(f"{base}/list", params={"primary_key": "order-7", "status": "queued"}, timeout=30)
    assert listed.status_code == 200, listed.text
    assert result.id in [row["task_id"] for row in listed.json()["data"]]
    assert answer.status_code == 200, answer.text
    shown = answer.json()["data"]
    assert (shown["task_id"], shown["name"], shown["status"]) == (result.id, "gowire.echo", "queued")
    assert shown["primary_key"] == "order-7" and shown["payload"]["go_payload"] == "eyJ4IjoxfQ=="
    assert main(["-A", "tests.integration.gowire_app", "--backend", redis_url, "status", result.id]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["task_id"], printed["status"], printed["payload"]["wire"]) == (result.id, "queued", "go")


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_go_tasks_starts_are_counted_beside_its_record(kind: str, redis_url: str):
    """``start`` (the delivery limit of a Go-format task): per task, with or without a Go record, one per
    delivery, forgotten after ``redis_ttl`` in Redis and once the record is final in memory."""
    from cogman.backends.memory import MemoryBackend
    from cogman.backends.redis.backend import RedisBackend
    from cogman.config.settings import Config

    backend = MemoryBackend(ttl=3600) if kind == "memory" else RedisBackend(redis_url, Config(redis_ttl=3600))
    try:
        store = backend.go_records()
        record = GoRecord.new(f"starts-{uuid.uuid4().hex}", "gowire.echo", b"")
        store.create(record)
        assert [store.start(record.task_id, f"d{n}").starts for n in range(3)] == [1, 2, 3]
        assert store.start(f"no-record-{uuid.uuid4().hex}", "d0").starts == 1
        if isinstance(backend, RedisBackend):
            for kind_of_key in ("go-starts", "go-start-token"):
                assert 3500 < backend.client.ttl(f"{backend.keys.prefix}:{kind_of_key}:{record.task_id}") <= 3600
        else:
            store.update(record.task_id, Status.SUCCESS, duration=0.5)
            assert store.start(record.task_id, "d3").starts == 0  # final: not run, not counted
            assert record.task_id not in store._starts  # type: ignore[attr-defined]
    finally:
        backend.close()


def test_a_go_wire_send_returns_only_once_rabbitmq_confirmed_it_whatever_the_send_mode(
    rabbit: str, redis_url: str, go_redis: redis.Redis
):
    """No re-enqueue sweep reads Go records: a message left in the outbox of a client that dies would be
    lost, so ``.delay()`` of a ``wire="go"`` task waits for the confirm even with ``send_mode="recorded"``."""
    app = App("gowire-recorded", broker=rabbit, backend=redis_url)
    assert app.config.send_mode == "recorded"
    task = app.task(name="gowire.echo", wire="go")(lambda payload: None)
    try:
        results = [task.delay(b"%d" % n) for n in range(20)]
        assert all(result.wait_sent(0) for result in results)  # confirmed before each .delay() returned
        assert {GoRecord.from_json(go_redis.get(r.id), r.id).status for r in results} == {Status.QUEUED}
    finally:
        app.close()


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_go_listing_reads_only_the_newest_records(kind: str, redis_url: str, monkeypatch: pytest.MonkeyPatch):
    """Listing filters the Go records in process: each call reads at most MAX_LISTED of them, the newest."""
    from cogman.backends.memory import MemoryBackend
    from cogman.backends.redis.backend import RedisBackend
    from cogman.config.settings import Config

    prefix = f"golist-{uuid.uuid4().hex[:8]}"
    config = Config(redis_ttl=3600, redis_prefix=prefix)
    backend = MemoryBackend(ttl=3600) if kind == "memory" else RedisBackend(redis_url, config)
    monkeypatch.setattr(f"cogman.backends.{'memory' if kind == 'memory' else 'redis'}.go_records.MAX_LISTED", 2)
    import time

    now = time.time_ns()
    try:
        for index in range(4):
            record = GoRecord.new(f"{prefix}-{index}", "gowire.echo", b"x")
            backend.go_records().create(record.evolve(created_at=go_time(now - (4 - index) * 1_000_000_000)))
        assert [r.task_id for r in backend.go_records().recent()] == [f"{prefix}-3", f"{prefix}-2"]
    finally:
        if isinstance(backend, RedisBackend):
            backend.client.delete(*[f"{prefix}-{index}" for index in range(4)])
        backend.close()
