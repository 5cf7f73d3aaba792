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

from cogman import App
from cogman.metrics import INSTALL_HINT, Prometheus
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
            ("cogman_attempts_dead_lettered_total", task("admin.not_registered")): 1,
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
