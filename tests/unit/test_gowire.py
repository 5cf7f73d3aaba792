"""Go Cogman's wire format (issue 22) without services: the record codec against every record Go wrote
in the captured vectors, byte for byte; Go's ranks; the frames of a Go-format message against Go's
captured content header; and a mixed fleet's round trip on the memory broker and backend."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from cogman import App, TaskFailed
from cogman.backends.memory.go_records import MemoryGoRecords
from cogman.brokers.rabbitmq.amqp_frames import publish_frames
from cogman.errors import CorruptRecord
from cogman.gowire.record import GO_RANK, GoRecord, go_allows, go_float, go_string, go_time, parse_go_time
from cogman.gowire.wire import is_go_delivery
from cogman.message import CONTENT_TYPE
from cogman.middleware.base import Middleware
from cogman.priority import Priority
from cogman.sending.go_send import go_message
from cogman.status import RANK, Status
from tests.gowire_vectors import every_raw_record, load, message, shape


def test_every_captured_record_parses_and_encodes_back_byte_for_byte():
    raws = every_raw_record()
    assert len(raws) >= 10
    for raw in raws:
        assert GoRecord.from_json(raw, "k").to_json() == raw


def test_go_ranks_are_cogmans_but_for_retry_which_outranks_in_progress():
    assert {s: r for s, r in GO_RANK.items() if RANK[s] != r} == {Status.RETRY: 4}
    assert not go_allows(Status.RETRY, Status.QUEUED) and not go_allows(Status.RETRY, Status.IN_PROGRESS)
    assert go_allows(Status.RETRY, Status.FAILED) and not go_allows(Status.FAILED, Status.SUCCESS)


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.000074091, "1.000074091"), (2.0, "2"), (0.0, "0"), (5e-7, "5e-7"), (1.5e21, "1.5e+21"), (1e-5, "0.00001")],
)
def test_floats_are_written_as_gos_encoder_writes_them(value: float, text: str):
    assert go_float(value) == text


def test_strings_are_escaped_as_gos_encoder_escapes_them():
    assert (
        go_string('<a & "b">\\\n\t\x01\b\u2028é\x7f')
        == '"\\u003ca \\u0026 \\"b\\"\\u003e\\\\\\n\\t\\u0001\\u0008\\u2028é\x7f"'
    )


def test_times_are_rfc3339nano_with_trailing_zeros_trimmed_and_parse_back():
    assert go_time(1_764_944_300_386_438_000) == "2025-12-05T14:18:20.386438Z"
    assert go_time(1_764_944_300_000_000_000) == "2025-12-05T14:18:20Z"
    moment = parse_go_time("2026-12-05T14:18:20.386438835Z")
    assert (moment.microsecond, moment.utcoffset().total_seconds()) == (386438, 0)


def test_a_key_holding_something_else_is_a_corrupt_record_naming_it():
    with pytest.raises(CorruptRecord, match="some-key"):
        GoRecord.from_json('{"hello": 1}', "some-key")


def test_a_go_format_delivery_is_one_with_both_headers_and_no_content_type():
    headers = {"TaskName": "gowire.echo", "TaskID": "id-1"}
    assert is_go_delivery(headers, {"delivery_mode": 2, "message_id": "id-1"})
    assert not is_go_delivery(headers, {"content_type": CONTENT_TYPE})
    assert not is_go_delivery({"TaskID": "id-1"}, {})


@pytest.mark.parametrize("name", ["high_json", "low_raw", "retry_pk", "unknown_name"])
def test_the_frames_of_a_go_format_message_carry_gos_content_header_byte_for_byte(name: str):
    captured = message(name)
    header_order = list(captured["headers"])  # Go's order is random per message: follow the capture's
    sent = go_message(captured["task_id"], captured["headers"]["TaskName"]["value"], b"", Priority.HIGH)
    headers = {key: sent.headers[key] for key in header_order}
    body = bytes.fromhex("") + __import__("base64").b64decode(captured["body_base64"])
    frames = publish_frames(
        1, "", captured["routing_key"], body, headers=headers, message_id=sent.task_id,
        content_type="", content_encoding="utf-8", frame_max=131072, mandatory=False,
    )  # fmt: skip
    method_size = int.from_bytes(frames[3:7], "big")
    header_frame = frames[7 + method_size + 1 :]
    header_size = int.from_bytes(header_frame[3:7], "big")
    content = header_frame[7 : 7 + header_size]
    assert content[12:] == bytes.fromhex(captured["properties_raw_hex"])
    assert int.from_bytes(content[4:12], "big") == captured["body_length"]


def test_memory_go_records_follow_gos_ranks_and_never_spend_below_zero():
    records = MemoryGoRecords(60)
    first = GoRecord.new("t1", "gowire.fail", b"x", retry=1)
    assert records.create(first) and not records.create(first.evolve(status=Status.QUEUED))
    retry = first.retry_attempt("t2")
    records.create(retry)
    assert records.update("t2", Status.IN_PROGRESS).status is Status.RETRY  # Go's rank: retry stays
    assert records.update("t2", Status.SUCCESS, duration=1.5).duration == 1.5
    assert records.update("t2", Status.FAILED, fail_error="late").status is Status.SUCCESS
    assert records.take_retry("t1") == 0 and records.take_retry("t1") is None
    assert records.get("t1").retry == 0 and records.update("nope", Status.QUEUED) is None


def test_concurrent_status_writes_and_retry_decrements_lose_nothing():
    """Go's race in the capture: its decrement wrote back a stale in_progress over failed. Here each
    change is one step: whatever the interleaving, failed stays and every decrement counts."""
    records = MemoryGoRecords(60)
    records.create(GoRecord.new("orig", "gowire.fail", b"x", retry=200))
    records.update("orig", Status.IN_PROGRESS)
    start = threading.Barrier(2)

    def decrement() -> None:
        start.wait()
        for _ in range(100):
            records.take_retry("orig")

    thread = threading.Thread(target=decrement)
    thread.start()
    start.wait()
    records.update("orig", Status.FAILED, fail_error="asked to fail")
    thread.join()
    final = records.get("orig")
    assert (final.status, final.retry, final.fail_error) == (Status.FAILED, 100, "asked to fail")


class Outcomes(Middleware):
    """Every settled delivery's outcome, awaited with ``wait_for``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str | None, str]] = []
        self.changed = threading.Condition()

    def after_outcome(self, message: Any, outcome: str) -> None:
        with self.changed:
            self.seen.append((None if message is None else message.name, outcome))
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 30) -> list[tuple[str | None, str]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.seen) >= count, timeout), self.seen
            return list(self.seen)


@pytest.fixture
def fleet() -> Any:
    outcomes = Outcomes()
    app = App("gowire-memory", broker="memory://", backend="memory://", middleware=[outcomes])
    app.outcomes = outcomes  # type: ignore[attr-defined]
    app.release = threading.Event()  # type: ignore[attr-defined]
    runs: list[tuple[str, bytes]] = []

    @app.task(name="gowire.echo", wire="go")
    def echo(payload: bytes) -> None:
        runs.append(("gowire.echo", payload))

    @app.task(name="gowire.echo_low", wire="go", priority="low")
    async def echo_low(payload: bytes) -> None:
        runs.append(("gowire.echo_low", payload))

    @app.task(name="gowire.fail", wire="go")
    def fail(payload: bytes) -> None:
        runs.append(("gowire.fail", payload))
        raise RuntimeError("asked to fail")

    @app.task(name="cogman.plain")
    def plain(x: int) -> int:
        return x

    @app.task(name="gowire.slow", wire="go", time_limit=0.2)
    def slow(payload: bytes) -> None:
        for _ in range(3000):  # work outlasting its time limit (interruptible between steps)
            if app.release.wait(0.01):
                return

    worker = app.start_background(concurrency=2)
    yield app, runs, (echo, echo_low, fail)
    worker.stop()
    app.close()


def test_go_tasks_run_on_memory_with_gos_records_sync_and_async(fleet: Any):
    app, runs, (echo, echo_low, _) = fleet
    high, low = echo.delay(b'{"x":1}'), echo_low.delay(b"hello raw")
    assert high.get(timeout=30) is None and low.get(timeout=30) is None
    assert sorted(runs) == [("gowire.echo", b'{"x":1}'), ("gowire.echo_low", b"hello raw")]
    assert sorted(app.outcomes.wait_for(2)) == [("gowire.echo", "succeeded"), ("gowire.echo_low", "succeeded")]
    stored = shape(app.backend.go_records().raw(high.id))
    expected = shape(load("records-run")["record_final"]["raw"])
    assert stored == {**expected, "PrimaryKey": ""}
    assert list(stored) == list(json.loads(load("records-run")["record_final"]["raw"]))


def test_a_failing_go_task_is_retried_the_go_way_until_its_records_budget_is_spent(fleet: Any):
    app, runs, (_, _, fail) = fleet
    result = fail.send(args=(b'{"order":42,"mode":"FAIL"}',), retry=2, primary_key="order-42")
    with pytest.raises(TaskFailed, match="asked to fail"):
        result.get(timeout=30)  # follows the chain to its last attempt
    assert [name for name, _ in runs].count("gowire.fail") == 3
    captured = load("records-retry")
    original = app.backend.go_records().raw(result.id)
    assert shape(original) == {**shape(captured["original_failed"]["raw"]), "Retry": 0}
    retries = [r for r in _all_go(app) if r.original_task_id == result.id and r.task_id != result.id]
    assert sorted(shape(r.to_json()).items() for r in retries) == sorted(
        shape(entry["raw"]).items() for entry in captured["retry_records"]
    )


def test_a_go_format_message_with_no_go_task_is_dead_lettered_once_naming_it(fleet: Any):
    app, runs, _ = fleet
    broker = app.broker
    for name in ("gowire.unknown", "cogman.plain"):
        broker.put(b'{"x":1}', {"TaskName": name, "TaskID": f"id-{name}"}, Priority.HIGH, content_type=False)
    outcomes = app.outcomes.wait_for(2)  # two worker threads: in either order
    assert sorted(outcomes) == [("cogman.plain", "dead_lettered"), ("gowire.unknown", "dead_lettered")]
    reasons = {d.headers["TaskName"]: d.headers.get("x-cogman-dead-letter-reason") for d in broker.dead_letters()}
    assert len(reasons) == 2
    assert "'gowire.unknown'" in reasons["gowire.unknown"] and "no task with that name" in reasons["gowire.unknown"]
    assert "'cogman.plain'" in reasons["cogman.plain"] and "not declared wire='go'" in reasons["cogman.plain"]
    assert runs == []


def _all_go(app: App) -> list[GoRecord]:
    store = app.backend.go_records()
    return [GoRecord.from_json(raw, key) for key, raw in store._records.items()]


def test_go_retry_ids_derive_as_cogmans_so_the_operator_views_follow_them():
    from cogman.gowire.record import go_retry_id
    from cogman.sending.client import retry_task_id

    assert go_retry_id("abc") == retry_task_id("abc")


def test_a_go_task_past_its_time_limit_fails_as_a_cogman_task_does(fleet: Any):
    app, _, _ = fleet
    result = app.tasks["gowire.slow"].delay(b"x")
    with pytest.raises(TaskFailed, match="time limit"):
        result.get(timeout=30)
    app.release.set()
    assert app.backend.go_records().get(result.id).status is Status.FAILED


def test_what_go_cannot_carry_is_refused_before_anything_is_written(fleet: Any):
    app, _, (echo, _, _) = fleet
    with pytest.raises(TypeError, match=r"gowire\.echo speaks Go Cogman's format"):
        echo.delay({"x": 1})
    with pytest.raises(ValueError, match="countdown"):
        echo.send(args=(b"x",), countdown=5)
    assert app.backend.go_records()._records == {}


def test_listing_shows_go_tasks_beside_cogmans_newest_first(fleet: Any):
    from datetime import timedelta

    from cogman.backends.base import TaskQuery
    from cogman.backends.go_query import count_tasks, list_tasks
    from cogman.record import utcnow

    app, _, (echo, _, _) = fleet
    plain = app.tasks["cogman.plain"].delay(1)
    go = echo.delay(b"x")
    assert go.get(timeout=30) is None and plain.get(timeout=30) == 1
    page = list_tasks(app.backend, TaskQuery(limit=10))
    assert [r.task_id for r in page.records] == [go.id, plain.id] and page.total == 2
    only_go = list_tasks(app.backend, TaskQuery(name="gowire.echo", status=Status.SUCCESS))
    assert [(r.task_id, r.payload["wire"]) for r in only_go.records] == [(go.id, "go")]
    assert [r.task_id for r in app.backend.query(TaskQuery()).records] == [plain.id]  # the backend's: cogman's
    now = utcnow()
    (bucket,) = count_tasks(app.backend, now - timedelta(hours=1), now, 7200)
    assert bucket.counts == {Status.SUCCESS: 2}
    assert [b.counts for b in app.backend.count_by_status(now - timedelta(hours=1), now, 7200)] == [{Status.SUCCESS: 1}]
