"""The workers' Prometheus middleware: counters, histogram and gauges move as a real worker runs tasks
on RabbitMQ and Redis, the endpoint lives as long as the worker, and ``--processes 2`` serves one
endpoint per process whose counters add up to the tasks run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cogman import App, Middleware, Status
from cogman.message import Message
from cogman.middleware.prometheus import INSTALL_HINT, Prometheus
from tests.admin_app import register
from tests.integration.api_helpers import free_port, wait_until_final
from tests.integration.rabbit_helpers import ROOT, wait_for
from tests.integration.redis_helpers import drop_prefix
from tests.ports import free_ports

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def answers(port: int) -> bool:
    try:
        scrape(port)
        return True
    except (urllib.error.URLError, ConnectionError):
        return False


def task(name: str) -> tuple[tuple[str, str], ...]:
    return (("task", name),)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = f"metrics-{uuid.uuid4().hex[:8]}"
    yield value
    drop_prefix(redis_url, value)


def test_counters_move_with_a_real_worker(rabbit: str, redis_url: str, prefix: str):
    port = free_port()
    app = register(App("admin", broker=rabbit, backend=redis_url, redis_prefix=prefix, metrics_port=port))
    assert not answers(port)  # nothing listens until a worker boots
    worker = app.start_background(concurrency=4)
    try:
        adds = [app.send_task("admin.add", (i, i)) for i in range(5)]
        flaky = app.send_task("admin.fail", ("nope",), retry=1)
        unknown = app.send_task("admin.not_registered")
        wait_until_final([*adds, flaky])
        wait_for(lambda: app.backend.get(unknown.id).status.value == "failed", 30, "the unknown task to fail")
        settled = {  # a delivery is counted once acked, a moment after its record is final
            ("cogman_attempts_succeeded_total", task("admin.add")): 5,
            ("cogman_attempts_failed_total", task("admin.fail")): 1,
            ("cogman_attempts_dead_lettered_total", task("<unregistered>")): 1,  # never a series per name
        }
        wait_for(lambda: all(scrape(port).get(key) == value for key, value in settled.items()), 30, "the counts")
        samples = scrape(port)
        assert samples[("cogman_attempts_started_total", task("admin.add"))] == 5
        assert samples[("cogman_attempts_succeeded_total", task("admin.add"))] == 5
        assert samples[("cogman_attempts_started_total", task("admin.fail"))] == 2
        assert samples[("cogman_attempts_retried_total", task("admin.fail"))] == 1
        assert samples[("cogman_attempts_failed_total", task("admin.fail"))] == 1
        assert samples[("cogman_attempt_duration_seconds_count", task("admin.add"))] == 5
        assert samples[("cogman_attempt_duration_seconds_bucket", (("le", "+Inf"), ("task", "admin.add")))] == 5
        assert samples[("cogman_attempts_in_progress", task("admin.add"))] == 0
        assert samples[("cogman_publisher_unconfirmed_messages", ())] == 0
        assert samples[("cogman_backend_buffered_writes", ())] == 0
        assert samples[("cogman_broker_reconnects_total", ())] == 0
        info = [labels for (name, labels) in samples if name == "cogman_worker_info"]
        assert dict(info[0])["pid"] == str(os.getpid()) and dict(info[0])["app"] == "admin"
    finally:
        worker.stop()
        app.close()
    assert not answers(port)  # the endpoint stops with the worker


def test_a_clear_error_without_prometheus_client(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install cogman\[api\]") as raised:
        Prometheus(9191)
    assert str(raised.value) == INSTALL_HINT
    with pytest.raises(ImportError, match=r"pip install cogman\[api\]"):
        App("no-metrics", metrics_port=9191)


def test_two_processes_serve_one_port_each(rabbit: str, redis_url: str, prefix: str):
    port = free_ports(2)  # one for each process: port and port + 1
    env: dict[str, Any] = {"COGMAN_BROKER_URL": rabbit, "COGMAN_BACKEND_URL": redis_url, "COGMAN_TEST_PREFIX": prefix}
    process = subprocess.Popen(
        [sys.executable, "-m", "cogman", "-A", "tests.admin_app", "worker", "--processes", "2", "-c", "2",
         "--metrics-port", str(port)],
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = register(App("admin", broker=rabbit, backend=redis_url, redis_prefix=prefix))
    try:
        wait_for(lambda: answers(port) and answers(port + 1), 60, "both processes' endpoints", interval=0.2)
        results = [client.send_task("admin.add", (i, 1)) for i in range(40)]
        wait_until_final(results)
        key = ("cogman_attempts_succeeded_total", task("admin.add"))
        wait_for(lambda: scrape(port).get(key, 0) + scrape(port + 1).get(key, 0) == 40, 30, "40 counted successes")
        per_process = [scrape(port), scrape(port + 1)]
        identities = [dict(label for (name, labels) in s if name == "cogman_worker_info" for label in labels)
                      for s in per_process]  # fmt: skip
        assert [i["index"] for i in identities] == ["0", "1"]
        assert identities[0]["pid"] != identities[1]["pid"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        client.close()


@pytest.fixture
def metered() -> Iterator[tuple[App, Prometheus]]:
    """An embedded app whose workers serve metrics on a free loopback port."""
    app = App("metered", broker="memory://", backend="memory://")
    metrics = Prometheus(0, host="127.0.0.1")
    app.middleware.middleware.append(metrics)  # type: ignore[attr-defined]
    yield app, metrics
    app.close()


def series(metrics: Prometheus, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == name
    }


def test_unknown_task_names_share_one_series(metered: tuple[App, Prometheus]):
    """Anyone able to publish chooses the names: each made-up one used to add a series for good."""
    app, metrics = metered

    @app.task(name="metered.known")
    def known() -> int:
        return 1

    results = [app.send_task(f"metered.made_up_{uuid.uuid4().hex}") for _ in range(100)]
    worker = app.start_background(concurrency=2)
    try:
        assert known.delay().get(timeout=30) == 1
        letters = "cogman_attempts_dead_lettered_total"
        wait_for(lambda: sum(series(metrics, letters).values()) == 100, 30, "100 dead-lettered deliveries")
    finally:
        worker.stop()
    assert all(result.status.value == "failed" for result in results)
    assert series(metrics, letters) == {task("<unregistered>"): 100}
    assert series(metrics, "cogman_attempts_succeeded_total") == {task("metered.known"): 1}


class _FailsOnce:
    """Raises the first time it is called, then lets every call through."""

    def __init__(self, error: BaseException) -> None:
        self.error: BaseException | None = error

    def __call__(self) -> None:
        error, self.error = self.error, None
        if error is not None:
            raise error


@pytest.mark.parametrize(
    ("where", "runs", "then"),
    [("backend write", 2, "succeeded"), ("middleware hook", 1, "skipped")],  # the success was recorded: skipped
)
def test_the_in_progress_gauge_returns_to_zero_when_the_outcome_path_raises(
    metered: tuple[App, Prometheus], monkeypatch: pytest.MonkeyPatch, where: str, runs: int, then: str
):
    """The success write (or a later middleware's after_execute) raised: the delivery went back, and the
    gauge stayed up by one for good, since the outcome hook was told no message."""
    app, metrics = metered
    fails_once = _FailsOnce(RuntimeError("the disk is on fire") if where == "backend write" else SystemExit(1))
    if where == "backend write":
        transition = app.backend.transition

        def flaky(task_id: str, status: Status, **fields: Any) -> Any:
            if status is Status.SUCCESS:
                fails_once()
            return transition(task_id, status, **fields)

        monkeypatch.setattr(app.backend, "transition", flaky)
    else:

        class Raises(Middleware):
            def after_execute(self, message: Message, **outcome: Any) -> None:
                fails_once()  # SystemExit: the stack lets it through (it only isolates Exception)

        app.middleware.middleware.append(Raises())  # type: ignore[attr-defined]

    @app.task(name="metered.add")
    def add(a: int, b: int) -> int:
        return a + b

    worker = app.start_background(concurrency=1)
    try:
        assert add.delay(2, 3).get(timeout=30) == 5
        settled = f"cogman_attempts_{then}_total"
        wait_for(lambda: series(metrics, settled).get(task("metered.add")) == 1, 30, f"the redelivery {then}")
    finally:
        worker.stop()
    assert fails_once.error is None  # the outcome path did raise once
    assert series(metrics, "cogman_attempts_started_total") == {task("metered.add"): runs}
    assert series(metrics, "cogman_attempts_in_progress") == {task("metered.add"): 0}
    assert series(metrics, "cogman_attempts_requeued_total") == {task("metered.add"): 1}
