"""OpenTelemetry tracing in one process, on memory:// (tests/integration/test_tracing_processes.py: across
processes on RabbitMQ): which spans a send and an attempt make, their attributes, and that the trace goes on
through a web request, a child task, retries, chains, chords and periodic ticks (docs/tracing.md)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from cogman import App, chain, chord
from cogman.errors import PublishError
from cogman.message import HEADER_FIRST, Message
from cogman.middleware.tracing import Tracing
from cogman.priority import Priority
from cogman.scheduling.beat import Beat
from cogman.scheduling.claims import publish_recorded


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def traced(provider: TracerProvider) -> Iterator[App]:
    """An app on memory:// traced into ``exporter``, with a worker, and the tasks the tests send."""
    app = App("traced", broker="memory://", backend="memory://", middleware=[Tracing(tracer_provider=provider)])

    @app.task(name="t.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="t.mul")
    def mul(a: int, b: int) -> int:
        return a * b

    @app.task(name="t.total")
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="t.flaky", retry=2)
    def flaky() -> None:
        raise ValueError("not today")

    @app.task(name="t.parent")
    def parent() -> str:
        return app.send_task("t.add", args=(1, 2)).id

    @app.task(name="t.async_parent")
    async def async_parent() -> str:
        return app.send_task("t.add", args=(2, 2)).id

    worker = app.start_background(concurrency=2)
    workers[app] = worker
    yield app
    settle(app)
    app.close()


workers: dict[App, Any] = {}


def settle(app: App) -> None:
    """Every task sent has finished, and the worker stopped: each attempt's span has ended (after its
    outcome is recorded, which is what ``join`` waits for)."""
    app.join(timeout=10)
    worker = workers.pop(app, None)
    if worker is not None:
        worker.stop()


def spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = spans(exporter, name)
    return span


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_a_send_and_its_attempt_are_a_producer_and_a_consumer_span_with_the_messaging_attributes(
    traced: App, exporter: InMemorySpanExporter
):
    result = traced.send_task("t.add", args=(2, 3))
    assert result.get(timeout=10) == 5
    settle(traced)
    send, process = one(exporter, "send t.add"), one(exporter, "process t.add")
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id and parent_of(process) == send.context.span_id
    assert parent_of(send) is None  # nothing was current: the send starts the trace
    common = {"messaging.system": "memory", "messaging.destination.name": "high_priority_queue",
              "messaging.message.id": result.id, "cogman.task.name": "t.add", "cogman.attempt": 1}  # fmt: skip
    assert dict(send.attributes or {}) == {**common, "messaging.operation.type": "send",
                                           "messaging.operation.name": "send"}  # fmt: skip
    assert dict(process.attributes or {}) == {
        **common,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "cogman.original_task_id": result.id,
        "cogman.outcome": "succeeded",
        "cogman.status": "success",
    }
    assert send.status.status_code is StatusCode.UNSET and process.status.status_code is StatusCode.UNSET


def test_a_task_sent_inside_a_web_requests_span_is_its_child(
    traced: App, provider: TracerProvider, exporter: InMemorySpanExporter
):
    tracer = provider.get_tracer("web")
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as request:
        result = traced.send_task("t.add", args=(1, 1))
    assert result.get(timeout=10) == 2
    settle(traced)
    send, process = one(exporter, "send t.add"), one(exporter, "process t.add")
    assert parent_of(send) == request.get_span_context().span_id
    assert {send.context.trace_id, process.context.trace_id} == {request.get_span_context().trace_id}


def test_a_task_sent_with_send_async_inside_an_async_requests_span_is_its_child(
    traced: App, provider: TracerProvider, exporter: InMemorySpanExporter
):
    """The async client sends from a pool thread: the request's context must travel there with the call."""
    import asyncio

    tracer = provider.get_tracer("web")

    async def handler() -> tuple[Any, int]:
        with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as request:
            result = await traced.send_task_async("t.add", args=(2, 1))
        return await result.get_async(timeout=10), request.get_span_context().span_id

    value, request_span = asyncio.run(handler())
    assert value == 3
    settle(traced)
    assert parent_of(one(exporter, "send t.add")) == request_span


def test_a_task_sent_from_inside_a_task_is_in_its_parents_trace(traced: App, exporter: InMemorySpanExporter):
    child_id = traced.send_task("t.parent").get(timeout=10)
    assert traced.result(child_id).get(timeout=10) == 3
    settle(traced)
    parent = one(exporter, "process t.parent")
    child_send, child_process = one(exporter, "send t.add"), one(exporter, "process t.add")
    assert parent_of(child_send) == parent.context.span_id
    assert child_process.context.trace_id == parent.context.trace_id == one(exporter, "send t.parent").context.trace_id


def test_a_task_sent_from_an_async_task_is_in_its_parents_trace(traced: App, exporter: InMemorySpanExporter):
    """The attempt's span is current on the worker's event loop too (the coroutine runs in a copy of the
    handler thread's context)."""
    child_id = traced.send_task("t.async_parent").get(timeout=10)
    assert traced.result(child_id).get(timeout=10) == 4
    settle(traced)
    parent = one(exporter, "process t.async_parent")
    assert parent_of(one(exporter, "send t.add")) == parent.context.span_id
    assert one(exporter, "process t.add").context.trace_id == parent.context.trace_id


def test_a_send_that_fails_ends_its_span_with_the_error(traced: App, exporter: InMemorySpanExporter):
    def refuse(messages: object, wait: bool = True) -> object:
        raise PublishError("the broker said no")

    traced.broker.publish = refuse  # type: ignore[method-assign]
    with pytest.raises(PublishError):
        traced.send_task("t.add", args=(1, 1), wait_confirmed=True)
    send = one(exporter, "send t.add")
    assert send.status.status_code is StatusCode.ERROR and send.status.description == "PublishError: the broker said no"
    assert (send.attributes or {}).get("error.type") == "PublishError"


def test_a_publish_left_to_re_enqueue_ends_its_send_span_with_the_error(traced: App, exporter: InMemorySpanExporter):
    """A workflow step or a tick whose publish the broker refused: the record waits for the sweep, the span
    says why."""
    [record] = traced.new_records("t.add", [((1, 1), {})])
    traced.backend.create([record])

    def refuse(messages: object, wait: bool = True) -> object:
        raise PublishError("the broker is away")

    traced.broker.publish = refuse  # type: ignore[method-assign]
    assert publish_recorded(traced, record) is None
    send = one(exporter, "send t.add")
    assert send.status.status_code is StatusCode.ERROR and send.status.description == "PublishError: the broker is away"


def test_every_retry_attempt_is_in_the_first_attempts_trace_and_says_which_attempt(
    traced: App, exporter: InMemorySpanExporter
):
    traced.send_task("t.flaky")
    settle(traced)
    attempts = sorted(spans(exporter, "process t.flaky"), key=lambda span: span.start_time or 0)
    sends = sorted(spans(exporter, "send t.flaky"), key=lambda span: span.start_time or 0)
    assert [(span.attributes or {}).get("cogman.attempt") for span in attempts] == [1, 2, 3]
    assert [(span.attributes or {}).get("cogman.attempt") for span in sends] == [1, 2, 3]
    assert len({span.context.trace_id for span in attempts + sends}) == 1
    # Each retry is sent from inside the attempt that failed, and runs as the child of that send.
    assert [parent_of(send) for send in sends[1:]] == [attempt.context.span_id for attempt in attempts[:2]]
    assert [parent_of(attempt) for attempt in attempts] == [send.context.span_id for send in sends]
    assert [(span.attributes or {}).get("cogman.outcome") for span in attempts] == ["retried", "retried", "failed"]
    for attempt in attempts:
        assert attempt.status.status_code is StatusCode.ERROR
        assert attempt.status.description == "ValueError: not today"
        assert (attempt.attributes or {}).get("cogman.status") == "failed"
        [event] = attempt.events
        assert event.name == "exception" and (event.attributes or {}).get("exception.type") == "ValueError"


def test_the_steps_of_a_chain_are_in_the_trace_of_its_send(traced: App, exporter: InMemorySpanExporter):
    assert chain(traced.tasks["t.add"].s(1, 2), traced.tasks["t.mul"].s(10)).delay().get(timeout=10) == 30
    settle(traced)
    workflow = one(exporter, "send chain")
    assert workflow.kind is SpanKind.INTERNAL and (workflow.attributes or {}).get("cogman.workflow") == "chain"
    steps = [*spans(exporter, "send t.add"), *spans(exporter, "process t.add"), *spans(exporter, "send t.mul"),
             *spans(exporter, "process t.mul")]  # fmt: skip
    assert len(steps) == 4 and {span.context.trace_id for span in steps} == {workflow.context.trace_id}
    # The second step is sent by the worker, from inside the first step's attempt.
    assert parent_of(one(exporter, "send t.mul")) == one(exporter, "process t.add").context.span_id


def test_the_members_and_the_callback_of_a_chord_are_in_the_trace_of_its_send(
    traced: App, exporter: InMemorySpanExporter
):
    """Members of two tasks: two batches, both under the chord's one send span."""
    add, mul, total = (traced.tasks[name] for name in ("t.add", "t.mul", "t.total"))
    members = [add.s(1, 1), add.s(2, 2), mul.s(3, 3)]
    assert chord(members, total.s()).delay().get(timeout=10) == 2 + 4 + 9
    settle(traced)
    workflow = one(exporter, "send chord")
    batches = [one(exporter, "send t.add"), one(exporter, "send t.mul")]
    assert [parent_of(batch) for batch in batches] == [workflow.context.span_id] * 2
    assert [(batch.attributes or {}).get("messaging.batch.message_count") for batch in batches] == [2, None]
    members_run = [*spans(exporter, "process t.add"), *spans(exporter, "process t.mul")]
    callback = [one(exporter, "send t.total"), one(exporter, "process t.total")]
    assert len(members_run) == 3
    assert {span.context.trace_id for span in members_run + callback} == {workflow.context.trace_id}


def test_a_periodic_tick_starts_its_own_trace(traced: App, provider: TracerProvider, exporter: InMemorySpanExporter):
    """Each tick is a trace of its own: the beat sends it with no span current."""
    traced.add_periodic("t.add", every=timedelta(seconds=1), args=(1, 1), name="ticks")
    now = [datetime(2026, 12, 5, 12, 0, 0, 500_000, tzinfo=UTC)]
    beat = Beat(traced, clock=lambda: now[0])
    beat.run_pending()  # the first pass: the schedule never ran, nothing is due
    sent = []
    for _ in range(2):
        now[0] += timedelta(seconds=1)
        sent += beat.run_pending()
    assert len(sent) == 2
    settle(traced)
    sends = spans(exporter, "send t.add")
    assert len(sends) == 2 and [parent_of(send) for send in sends] == [None, None]
    assert len({send.context.trace_id for send in sends}) == 2
    for process in spans(exporter, "process t.add"):
        assert process.context.trace_id in {send.context.trace_id for send in sends}


def test_send_many_is_one_send_span_for_the_batch(traced: App, exporter: InMemorySpanExporter):
    results = traced.send_many("t.add", [((i, i), {}) for i in range(5)])
    assert [r.get(timeout=10) for r in results] == [0, 2, 4, 6, 8]
    settle(traced)
    send = one(exporter, "send t.add")
    attributes = dict(send.attributes or {})
    assert attributes["messaging.batch.message_count"] == 5 and "messaging.message.id" not in attributes
    processes = spans(exporter, "process t.add")
    assert len(processes) == 5 and {parent_of(span) for span in processes} == {send.context.span_id}


def test_tracing_false_makes_no_tracing_middleware_and_no_trace_headers():
    app = App("untraced", broker="memory://", backend="memory://", tracing=False)
    assert not any(isinstance(m, Tracing) for m in app.middleware.middleware)
    app.send_task("t.nothing")
    delivery = app.broker.consume([Priority.HIGH], prefetch=1).receive(1)  # type: ignore[attr-defined]
    assert delivery is not None and set(delivery.headers) == {"TaskName", "TaskID", HEADER_FIRST}
    app.close()


def test_an_app_installs_tracing_by_itself_when_opentelemetry_is_importable():
    app = App("by-itself", broker="memory://", backend="memory://")
    assert sum(isinstance(m, Tracing) for m in app.middleware.middleware) == 1
    app.close()


def test_without_opentelemetry_an_app_has_no_tracing_middleware(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # type: ignore[arg-type]  # the import fails
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # type: ignore[arg-type]
    app = App("without", broker="memory://", backend="memory://")
    assert not any(isinstance(m, Tracing) for m in app.middleware.middleware)
    app.close()


def test_the_trace_headers_travel_beside_the_body_and_come_back_from_a_delivery():
    message = Message("id-1", "t.add", "id-1", Priority.HIGH, args=(1, 2))
    body = message.encode()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    message.carry({"traceparent": parent, "tracestate": "a=1", "baggage": "not=kept"})
    assert message.encode() == body and message == Message("id-1", "t.add", "id-1", Priority.HIGH, args=(1, 2))
    assert message.headers == {"TaskName": "t.add", "TaskID": "id-1", "traceparent": parent, "tracestate": "a=1"}
    decoded = Message.decode(body, {**message.headers, "x-death": [{"count": 1}]})
    assert decoded.trace_context == {"traceparent": parent, "tracestate": "a=1"}
    assert Message.decode(body, {"TaskName": "t.add", "TaskID": "id-1", "traceparent": 7}).trace_context is None


def test_a_go_format_message_keeps_exactly_gos_two_headers_when_traced():
    message = Message("id-2", "go.task", "id-2", Priority.HIGH, args=(b"raw",), raw_body=b"raw")
    message.carry({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert message.headers == {"TaskName": "go.task", "TaskID": "id-2"} and message.encode() == b"raw"
