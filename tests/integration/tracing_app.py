"""The app of the tracing tests across processes: ``cogman -A tests.integration.tracing_app worker``.

Broker and backend come from ``COGMAN_BROKER_URL`` / ``COGMAN_BACKEND_URL``; ``COGMAN_TEST_PREFIX`` isolates
the Redis keys of one test. With ``COGMAN_TEST_SPANS`` (a directory) set, the process configures an
OpenTelemetry SDK tracer provider, as a user's app module would, whose exporter (the SDK's console
exporter) writes each finished span as one JSON object a line into ``<COGMAN_TEST_SPANS>/<pid>.jsonl``.
``COGMAN_TEST_TICKS`` adds a schedule sending ``tr.tick`` every second, for ``worker --beat``.
"""

from __future__ import annotations

import os
from datetime import timedelta

from cogman import App

SPANS = os.environ.get("COGMAN_TEST_SPANS")
if SPANS:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    def _one_line(span: ReadableSpan) -> str:
        return span.to_json(indent=None) + "\n"

    _out = open(os.path.join(SPANS, f"{os.getpid()}.jsonl"), "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    _provider = TracerProvider()
    _provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=_out, formatter=_one_line)))
    trace.set_tracer_provider(_provider)

app = App("tracing", redis_prefix=os.environ.get("COGMAN_TEST_PREFIX", "cogman"))


@app.task(name="tr.add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="tr.mul")
def mul(a: int, b: int) -> int:
    return a * b


@app.task(name="tr.total")
def total(values: list[int]) -> int:
    return sum(values)


@app.task(name="tr.flaky", retry=2, retry_backoff=1)  # each retry waits in the delay ladder
def flaky() -> None:
    raise ValueError("not today")


@app.task(name="tr.parent")
def parent() -> str:
    return add.delay(20, 22).id


@app.task(name="tr.tick")
def tick() -> str:
    return "tock"


if os.environ.get("COGMAN_TEST_TICKS"):
    app.add_periodic(tick, every=timedelta(seconds=1), name="ticks")
