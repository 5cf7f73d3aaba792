"""Tracing across processes, on RabbitMQ and Redis: this process sends (its spans in the SDK's in-memory
exporter), a ``cogman worker --beat --log-format json`` process runs the tasks (its app module exports its
spans through the SDK's console exporter into a file). The trace context crosses in the AMQP headers; the
worker's JSON log lines name the attempt and its span (docs/tracing.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from cogman import App, chain, chord
from cogman.middleware.tracing import Tracing
from cogman.signature import Signature
from tests.integration.rabbit_helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.tracing_app"


def read_spans(directory: Path) -> list[dict[str, Any]]:
    spans = []
    for path in directory.glob("*.jsonl"):
        spans += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return spans


def ids(span: dict[str, Any]) -> tuple[int, int, int | None]:
    """(trace id, span id, parent span id) of a span in the SDK's JSON form."""
    parent = span["parent_id"]
    return int(span["context"]["trace_id"], 16), int(span["context"]["span_id"], 16), parent and int(parent, 16)


def named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return sorted((s for s in spans if s["name"] == name), key=lambda s: s["start_time"])


@pytest.fixture
def traced_worker(rabbit: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[App, InMemorySpanExporter, Any]]:
    """(a client app traced into an in-memory exporter, that exporter, the worker process); the worker
    writes its spans under ``tmp_path / "spans"``."""
    prefix = f"tracing-{uuid.uuid4().hex[:8]}"
    (tmp_path / "spans").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COGMAN_BROKER_URL": rabbit, "COGMAN_BACKEND_URL": redis_url,
           "COGMAN_TEST_PREFIX": prefix, "COGMAN_TEST_SPANS": str(tmp_path / "spans"),
           "COGMAN_TEST_TICKS": "1"}  # fmt: skip
    command = [sys.executable, "-m", "cogman", "-A", APP, "worker", "-c", "2", "--beat", "--log-format", "json"]
    worker = subprocess.Popen(
        [*command, "-l", "INFO"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,  # the banner; the log (stderr) is what is read
        stderr=open(tmp_path / "worker.log", "w"),  # noqa: SIM115
        text=True,
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = App("tracing-client", broker=rabbit, backend=redis_url, redis_prefix=prefix,
                 middleware=[Tracing(tracer_provider=provider)])  # fmt: skip
    try:
        yield client, exporter, worker
    finally:
        client.close()
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)


def test_traces_continue_from_a_client_through_a_worker_process(
    traced_worker: tuple[App, InMemorySpanExporter, subprocess.Popen[str]], tmp_path: Path
):
    client, exporter, worker = traced_worker
    tracer = client.middleware.middleware[0]._tracer  # type: ignore[attr-defined]
    with tracer.start_as_current_span("GET /sum", kind=SpanKind.SERVER) as request:
        assert client.send_task("tr.add", args=(1, 2)).get(timeout=60) == 3
    child_id = client.send_task("tr.parent").get(timeout=60)
    assert client.result(child_id).get(timeout=60) == 42
    client.send_task("tr.flaky", retry=2)  # the budget: this process does not register the task
    members = [Signature("tr.add", (1, 1), app=client), Signature("tr.mul", (2, 3), app=client)]
    assert chord(members, Signature("tr.total", app=client)).delay().get(timeout=60) == 8
    steps = [Signature("tr.add", (1, 2), app=client), Signature("tr.mul", (10,), app=client)]
    assert chain(*steps).delay().get(timeout=60) == 30
    wait_for(lambda: len(named(read_spans(tmp_path / "spans"), "process tr.flaky")) == 3, 60, "three flaky attempts")
    wait_for(lambda: len(named(read_spans(tmp_path / "spans"), "process tr.tick")) >= 2, 60, "two periodic ticks")
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=60)
    assert worker.returncode == 0

    ours = [json.loads(span.to_json(indent=None)) for span in exporter.get_finished_spans()]
    theirs = read_spans(tmp_path / "spans")
    everything = ours + theirs

    # A web request's task: the client's send is the request's child, the worker's attempt the send's.
    request_trace, request_span = request.get_span_context().trace_id, request.get_span_context().span_id
    [sent] = [s for s in named(ours, "send tr.add") if ids(s)[2] == request_span]
    [ran] = [s for s in named(theirs, "process tr.add") if ids(s)[2] == ids(sent)[1]]
    assert ids(sent)[0] == ids(ran)[0] == request_trace
    assert ran["kind"] == "SpanKind.CONSUMER" and ran["attributes"]["messaging.system"] == "rabbitmq"
    assert ran["attributes"]["cogman.status"] == "success"
    assert ran["attributes"]["messaging.operation.type"] == "process"

    # A task sent from a task: the child's send (in the worker) is a child of the parent's attempt.
    [parent_run] = named(theirs, "process tr.parent")
    [child_sent] = [s for s in named(theirs, "send tr.add") if ids(s)[2] == ids(parent_run)[1]]
    [child_run] = [s for s in named(theirs, "process tr.add") if ids(s)[2] == ids(child_sent)[1]]
    assert ids(child_run)[0] == ids(parent_run)[0] == ids(one_named(ours, "send tr.parent"))[0]

    # Every retry attempt: same trace, numbered, failed with the exception recorded.
    attempts = named(theirs, "process tr.flaky")
    assert [a["attributes"]["cogman.attempt"] for a in attempts] == [1, 2, 3]
    assert {ids(a)[0] for a in attempts} == {ids(one_named(ours, "send tr.flaky"))[0]}
    assert {a["status"]["status_code"] for a in attempts} == {"ERROR"}
    assert all(a["events"][0]["attributes"]["exception.type"] == "ValueError" for a in attempts)

    # A chord: members of two tasks and the callback, in the trace of the chord's send.
    chord_trace = ids(one_named(ours, "send chord"))[0]
    in_chord = [s for s in everything if ids(s)[0] == chord_trace]
    assert sorted(s["name"] for s in in_chord if s["name"].startswith("process")) == [
        "process tr.add", "process tr.mul", "process tr.total"]  # fmt: skip

    # A chain: both steps in the trace of the chain's send; the second sent by the worker.
    chain_trace = ids(one_named(ours, "send chain"))[0]
    in_chain = sorted(s["name"] for s in everything if ids(s)[0] == chain_trace)
    assert in_chain == ["process tr.add", "process tr.mul", "send chain", "send tr.add", "send tr.mul"]

    # Periodic ticks: each its own trace, started by the beat's send.
    tick_sends = named(theirs, "send tr.tick")
    assert len(tick_sends) >= 2 and all(ids(s)[2] is None for s in tick_sends)
    assert len({ids(s)[0] for s in tick_sends}) == len(tick_sends)
    for run in named(theirs, "process tr.tick"):
        assert ids(run)[0] in {ids(s)[0] for s in tick_sends}

    # The worker's JSON log: one object a line; a task's line names it, and its span.
    lines = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines() if line.strip()]
    assert all({"timestamp", "level", "logger", "message"} <= set(line) for line in lines)
    [ran_line] = [line for line in lines if line.get("span_id") == f"{ids(ran)[1]:016x}"]
    assert ran_line["trace_id"] == f"{request_trace:032x}" and ran_line["task_name"] == "tr.add"
    assert ran_line["attempt"] == 1 and ran_line["status"] == "success" and "succeeded" in ran_line["message"]
    assert ran_line["task_id"] == ran["attributes"]["messaging.message.id"]
    failed = [line for line in lines if line.get("task_name") == "tr.flaky"]
    assert [(line["attempt"], line["status"], line["level"]) for line in failed] == [
        (1, "failed", "ERROR"), (2, "failed", "ERROR"), (3, "failed", "ERROR")]  # fmt: skip
    assert all("ValueError: not today" in line["exception"] for line in failed)


def one_named(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [span] = named(spans, name)
    return span


def test_json_logs_from_worker_processes_name_the_task_without_trace_ids_when_nothing_traces(
    rabbit: str, redis_url: str, tmp_path: Path
):
    """``--processes``: the children log JSON too. No tracer provider is configured here (no
    ``COGMAN_TEST_SPANS``): OpenTelemetry's spans are no-ops, and the lines carry no trace ids."""
    prefix = f"tracing-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COGMAN_BROKER_URL": rabbit, "COGMAN_BACKEND_URL": redis_url,
           "COGMAN_TEST_PREFIX": prefix}  # fmt: skip
    env.pop("COGMAN_TEST_SPANS", None)
    with open(tmp_path / "worker.log", "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cogman", "-A", APP, "worker", "--processes", "1", "-c", "1", "--log-format", "json",
             "-l", "INFO"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True,
        )  # fmt: skip
        client = App("tracing-client", broker=rabbit, backend=redis_url, redis_prefix=prefix, tracing=False)
        try:
            result = client.send_task("tr.add", args=(20, 22))
            assert result.get(timeout=60) == 42
        finally:
            client.close()
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    lines = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines() if line.strip()]
    [line] = [line for line in lines if line.get("task_id") == result.id]
    assert line["task_name"] == "tr.add" and line["status"] == "success" and line["logger"] == "cogman.worker"
    assert "trace_id" not in line and "span_id" not in line
    assert any(line["message"].startswith("worker process") for line in lines)  # a child's own lines
