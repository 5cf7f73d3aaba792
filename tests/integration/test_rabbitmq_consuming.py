"""Consuming from the real RabbitMQ when messages are hostile: malformed deliveries are dead-lettered
once with a reason while the connection stays up, unexpected failures are given back a bounded number of
times, and a dead letter is never acked before RabbitMQ holds its copy (issue 7, items 5, 6 and 12).
"""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable

import pytest

from cogman import App, Status
from cogman.brokers.base import DEAD_LETTER_QUEUE, HEADER_DEAD_LETTER_REASON
from cogman.brokers.memory import MemoryBroker
from cogman.priority import Priority
from cogman.worker.execution import Outcome
from tests.integration.consuming_helpers import (
    MakeBroker,
    delete_queue,
    make_broker,
    message,
    publish_raw,
    queue_exists,
    task_body,
    unacked,
)
from tests.integration.rabbit_helpers import depth, figures, wait_for

__all__ = ["make_broker"]  # a fixture

MAX_SIZE = 64 * 1024
JSON = "application/json"
#: kind -> what its dead-letter reason must contain
STORM_REASONS = {
    "not json": "body is not valid JSON",
    "missing headers": "missing header TaskID",
    "unknown task": "unhandled task: storm.nobody",
    "bad arguments": "arguments do not fit storm.typed",
    "compression header": "compressed message (compression='application/x-gzip')",
    "non-UTF-8 content_type": "undecodable message properties (UnicodeDecodeError",
    "non-UTF-8 header name": "header name b'\\xffname' is not UTF-8",
    "deep nesting": "body is nested too deeply to decode",
    "attempt 1e400": "malformed message field: cannot convert float infinity to integer",
    "over max_message_size": f"body of 102400 bytes is over max_message_size ({MAX_SIZE} bytes)",
}
BOMB = zlib.compress(b"\0" * 10_000_000)  # 10 kB that would inflate to 10 MB


def malformed(kind: str, number: int) -> tuple[bytes, dict[str, object]]:
    """One malformed message of ``kind``: (body, AMQP properties)."""
    task_id = str(uuid.uuid4())
    headers: dict[object, object] = {"TaskID": task_id, "TaskName": "storm.good", "x-storm": number}
    body = task_body(task_id, "storm.good", [number])
    content_type: str | bytes = JSON
    if kind == "not json":
        body = b"{not json"
    elif kind == "missing headers":
        headers = {"x-storm": number}
    elif kind == "unknown task":
        headers["TaskName"], body = "storm.nobody", task_body(task_id, "storm.nobody", [number])
    elif kind == "bad arguments":
        headers["TaskName"], body = "storm.typed", task_body(task_id, "storm.typed", [1, 2, 3])
    elif kind == "compression header":
        headers["compression"], body = "application/x-gzip", BOMB
    elif kind == "non-UTF-8 content_type":
        content_type = b"application/\xff\xfejson"
    elif kind == "non-UTF-8 header name":
        headers[b"\xffname"] = "value"
    elif kind == "deep nesting":
        body = b"[" * 20_000 + b"]" * 20_000
    elif kind == "attempt 1e400":
        body = body[:-1] + b', "attempt": 1e400}'
    else:
        body = b"x" * 102_400
    return body, {"application_headers": headers, "content_type": content_type, "delivery_mode": 2}


def test_malformed_storm_every_bad_message_dead_lettered_once_and_the_connection_stays(
    rabbit: str, rabbit_app: Callable[..., App]
):
    app = rabbit_app(max_message_size=MAX_SIZE, high_priority_queue_count=2, low_priority_queue_count=2)
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    @app.task(name="storm.good")
    def good(index: int) -> int:
        with lock:
            runs[index] += 1
        return index

    @app.task(name="storm.typed")
    def typed(a: int, b: int) -> int:
        return a + b

    worker = app.start_background(concurrency=4)
    consumer = worker._consumer
    kinds = list(STORM_REASONS)
    results = []
    started = time.monotonic()
    try:
        for number in range(100):  # 10 good tasks, then one malformed message, a hundred times
            results += app.send_many("storm.good", [((number * 10 + i,), {}) for i in range(10)])
            queue = ["high_priority_queue_0", "low_priority_queue_1"][number % 2]
            publish_raw(rabbit, queue, [malformed(kinds[number % 10], number)])
        wait_for(lambda: len(runs) == 1000, 120, "the 1,000 good tasks")
        wait_for(lambda: depth(rabbit, DEAD_LETTER_QUEUE) == 100, 60, "100 dead letters")
        elapsed = time.monotonic() - started
    finally:
        worker.stop()

    letters = app.broker.dead_letters()
    by_kind = Counter(kinds[int(letter.headers["x-storm"]) % 10] for letter in letters)
    succeeded = Counter(app.backend.get(r.id).status for r in results)[Status.SUCCESS]
    figures(
        "malformed storm", sent=1100, succeeded=succeeded, lost=1000 - len(runs),
        ran_twice=sum(n - 1 for n in runs.values()), dead_lettered=len(letters), reconnects=consumer.reconnects,
        recover_s=round(elapsed, 2),
    )  # fmt: skip
    assert succeeded == 1000 and sorted(runs) == list(range(1000))
    assert len(letters) == 100 and by_kind == Counter({kind: 10 for kind in kinds})
    assert len({letter.headers["x-storm"] for letter in letters}) == 100  # each exactly once
    for letter in letters:
        kind = kinds[int(letter.headers["x-storm"]) % 10]
        assert STORM_REASONS[kind] in letter.headers[HEADER_DEAD_LETTER_REASON], kind
        if kind == "compression header":  # kept as it came, never inflated, and inert for kombu readers
            assert letter.body == BOMB and letter.headers["x-cogman-compression"] == "application/x-gzip"
        if kind == "over max_message_size":
            assert letter.body == b"x" * 102_400
    assert consumer.reconnects == 0
    assert worker.outcomes[Outcome.DEAD_LETTERED] == 100 and worker.outcomes[Outcome.SUCCEEDED] == 1000
    assert all(depth(rabbit, q) == 0 for q in ("high_priority_queue_0", "low_priority_queue_1"))
    assert depth(rabbit, DEAD_LETTER_QUEUE) == 100


@pytest.mark.parametrize(
    ("kind", "reason"),
    [(kind, STORM_REASONS[kind]) for kind in ("compression header", "non-UTF-8 content_type",
                                              "non-UTF-8 header name", "over max_message_size")],
)  # fmt: skip
def test_an_undecodable_delivery_reaches_the_worker_as_poison(rabbit: str, make_broker: MakeBroker, kind, reason):
    broker = make_broker(max_message_size=MAX_SIZE)
    consumer = broker.consume([Priority.HIGH], prefetch=4)
    body, properties = malformed(kind, 7)
    try:
        publish_raw(rabbit, "high_priority_queue_0", [(body, properties)])
        delivery = consumer.receive(10)
        assert delivery is not None and delivery.poison is not None and reason in delivery.poison
        assert delivery.body == body and delivery.headers["x-storm"] == 7
        assert all(isinstance(name, str) for name in delivery.headers)
        consumer.dead_letter(delivery, delivery.poison)
        wait_for(lambda: depth(rabbit, DEAD_LETTER_QUEUE) == 1, 10, "the dead letter")
        wait_for(lambda: unacked("high_priority_queue_0") == 0, 10, "the source to be acked")
    finally:
        consumer.close()
    (letter,) = broker.dead_letters()
    figures(f"undecodable delivery: {kind}", sent=1, succeeded=0, lost=0, ran_twice=0, dead_lettered=1,
            reconnects=consumer.reconnects, recover_s=0)  # fmt: skip
    assert letter.body == body and letter.headers[HEADER_DEAD_LETTER_REASON] == delivery.poison
    assert consumer.reconnects == 0 and depth(rabbit, "high_priority_queue_0") == 0


@pytest.mark.parametrize("where", ["classic", "quorum", "memory"])
def test_redelivery_is_counted_through_the_broker_then_dead_lettered(rabbit: str, make_broker: MakeBroker, where):
    broker = (
        MemoryBroker(max_redeliveries=3) if where == "memory" else make_broker(queue_type=where, max_redeliveries=3)
    )
    sent = message(Priority.HIGH, 5)
    broker.publish([sent])
    consumer = broker.consume([Priority.HIGH], prefetch=4)
    counts = []
    try:
        for _ in range(4):
            delivery = consumer.receive(10)
            assert delivery is not None and delivery.headers["TaskID"] == sent.task_id
            assert delivery.body == sent.encode()
            counts.append(delivery.redeliveries)
            consumer.redeliver(delivery, "BackendUnavailable: redis went away")
        wait_for(lambda: len(broker.dead_letters()) == 1, 10, "the dead letter")
        assert consumer.receive(0.3) is None
    finally:
        consumer.close()

    (letter,) = broker.dead_letters()
    reason = letter.headers[HEADER_DEAD_LETTER_REASON]
    figures(f"redelivery bound ({where})", sent=1, succeeded=0, lost=0, ran_twice=0, dead_lettered=1,
            reconnects=getattr(consumer, "reconnects", 0), recover_s=0)  # fmt: skip
    assert counts == [0, 1, 2, 3]
    assert reason == "BackendUnavailable: redis went away (given back 3 time(s) already)"
    assert letter.body == sent.encode() and letter.headers["TaskID"] == sent.task_id
    if where != "memory":
        assert depth(rabbit, "high_priority_queue_0") == 0
        assert consumer.reconnects == 0  # type: ignore[union-attr]


def test_a_dead_letter_waits_for_its_queue_before_the_source_is_acked(rabbit: str, make_broker: MakeBroker):
    broker = make_broker()
    sent = message(Priority.HIGH, 1)
    broker.publish([sent])
    foreign = (b"no message_id here", {"application_headers": {"TaskName": "x"}, "delivery_mode": 2})
    publish_raw(rabbit, "high_priority_queue_0", [foreign])
    consumer = broker.consume([Priority.HIGH], prefetch=4)
    try:
        first, second = consumer.receive(10), consumer.receive(10)
        assert first is not None and second is not None
        delete_queue(rabbit, DEAD_LETTER_QUEUE)  # an operator "cleans up" while the worker runs
        started = time.monotonic()
        consumer.dead_letter(first, "reason one")
        consumer.dead_letter(second, "reason two")
        wait_for(lambda: queue_exists(rabbit, DEAD_LETTER_QUEUE), 30, "the dead-letter queue declared again")
        wait_for(lambda: depth(rabbit, DEAD_LETTER_QUEUE) == 2, 30, "both dead letters")
        wait_for(lambda: unacked("high_priority_queue_0") == 0, 30, "both sources acked")
        recovered = time.monotonic() - started
        assert consumer._session is not None
        returned = consumer._session.republisher.failures
    finally:
        consumer.close()

    letters = broker.dead_letters()
    figures("dead-letter queue deleted", sent=2, succeeded=0, lost=2 - len(letters), ran_twice=0,
            dead_lettered=len(letters), reconnects=consumer.reconnects, recover_s=round(recovered, 2))  # fmt: skip
    assert returned >= 2  # both first copies came back unrouted: neither source was acked for them
    assert sorted(letter.headers[HEADER_DEAD_LETTER_REASON] for letter in letters) == ["reason one", "reason two"]
    assert sorted(letter.body for letter in letters) == sorted([sent.encode(), foreign[0]])
    assert depth(rabbit, "high_priority_queue_0") == 0
    assert consumer.reconnects == 0


def test_a_delivery_body_reaches_the_worker_byte_for_byte(rabbit: str, make_broker: MakeBroker):
    """With py-amqp's auto_decode on, a body declared latin-1 was decoded and re-encoded as UTF-8 (two
    copies per delivery, and other bytes than were sent, also for the max_message_size check)."""
    broker = make_broker()
    consumer = broker.consume([Priority.HIGH], prefetch=4)
    body = '{"café": 1}'.encode("latin-1")
    try:
        publish_raw(rabbit, "high_priority_queue_0", [(body, {"content_encoding": "latin-1"})])
        delivery = consumer.receive(10)
        assert delivery is not None and delivery.body == body
        consumer.dead_letter(delivery, "test: done with it")
    finally:
        consumer.close()
