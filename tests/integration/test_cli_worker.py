"""``cogman worker`` with Celery's habits: ``-l``, argparse errors instead of tracebacks, ``--broker`` and
``--backend``, the banner and the stop line; and the memory:// note of the operator commands."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cogman import App, TaskFailed
from cogman.cli.main import DEFAULT_LOG_LEVEL, _parser, main, url_overrides
from cogman.priority import Priority
from tests.integration.rabbit_helpers import ROOT
from tests.ports import free_ports


def cogman(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cogman", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-A", "tests.cli_app", "worker", "-Q", "medium"], "argument -Q/--queues: 'medium' is not a queue family"),
        (["-A", "tests.cli_app", "worker", "-c", "-3"], "argument -c/--concurrency: must be at least 1, got -3"),
        (["-A", "tests.cli_app", "worker", "-c", "0"], "argument -c/--concurrency: must be at least 1, got 0"),
        (["-A", "tests.cli_app", "worker", "-c", "many"], "argument -c/--concurrency: 'many' is not an integer"),
        (
            ["--log-level", "LOUD", "-A", "tests.cli_app", "status", "x"],
            "argument --log-level/--loglevel: invalid choice",
        ),
        (["-A", "tests.cli_app", "worker", "-l", "loud"], "argument -l/--loglevel/--log-level: invalid choice: 'LOUD'"),
        (["demo", "-n", "-5"], "argument -n/--tasks: must be at least 1, got -5"),
        (["demo", "-c", "0"], "argument -c/--concurrency: must be at least 1, got 0"),
        (["-A", "tests.cli_app", "worker", "--processes", "0"], "argument -p/--processes: must be at least 1, got 0"),
        (["-A", "tests.cli_app", "worker", "--metrics-port", "70000"], "must be a TCP port (0-65535), got 70000"),
        (["-A", "tests.cli_app", "worker", "--metrics-host", "127.0.0.1:9191"], "'127.0.0.1:9191' is not an address"),
        (["-A", "tests.cli_app", "list", "--limit", "0"], "argument --limit: must be between 1 and 1000, got 0"),
        (["-A", "tests.cli_app", "worker", "--broker", "localhost:5672"], "argument -b/--broker: 'localhost:5672' is"),
        (["--backend", "redis", "-A", "tests.cli_app", "status", "x"], "argument --backend: 'redis' is not a URL"),
    ],
)
def test_a_bad_argument_is_a_one_line_usage_error(args: list[str], says: str):
    done = cogman(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cogman") and ": error: " in last and says in last, done.stderr


def test_bad_arguments_exit_2_in_process(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["-A", "tests.cli_app", "worker", "-c", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1, got 0" in capsys.readouterr().err


def test_log_levels_as_celery_spells_them():
    parse = _parser().parse_args
    assert parse(["-A", "m", "worker"]).log_level is None and DEFAULT_LOG_LEVEL == "WARNING"
    assert parse(["-A", "m", "worker", "-l", "info"]).log_level == "INFO"
    assert parse(["-A", "m", "worker", "--loglevel", "Debug"]).log_level == "DEBUG"
    assert parse(["--log-level", "error", "-A", "m", "worker"]).log_level == "ERROR"
    assert parse(["--log-level", "error", "-A", "m", "worker", "-l", "info"]).log_level == "INFO"
    assert parse(["--loglevel", "critical", "-A", "m", "status", "x"]).log_level == "CRITICAL"


def test_queue_families_parse_in_any_case():
    parse = _parser().parse_args
    assert parse(["-A", "m", "worker"]).queues == [Priority.HIGH, Priority.LOW]
    assert parse(["-A", "m", "worker", "-Q", "low"]).queues == [Priority.LOW]
    assert parse(["-A", "m", "worker", "-Q", "LOW, high"]).queues == [Priority.HIGH, Priority.LOW]


def test_broker_and_backend_flags_on_either_side_of_the_command():
    parse = _parser().parse_args
    before = parse(["-b", "amqp://a//", "--backend", "redis://r/0", "-A", "m", "worker"])
    assert (before.broker, before.backend) == ("amqp://a//", ["redis://r/0"])
    after = parse(["-A", "m", "inspect", "x", "--broker", "amqp://b//", "--backend", "redis://r/0", "--backend",
                   "mongomock://m"])  # fmt: skip
    assert (after.broker, after.backend) == ("amqp://b//", ["redis://r/0", "mongomock://m"])
    assert parse(["--broker", "amqp://a//", "-A", "m", "status", "x", "--broker", "amqp://b//"]).broker == "amqp://b//"
    assert url_overrides(None, None) == {}
    assert url_overrides("amqp://a//", ["redis://r/0"]) == {"broker_url": "amqp://a//", "backend_url": "redis://r/0"}
    assert url_overrides(None, ["redis://r/0", "mongomock://m"]) == {"backend_url": ["redis://r/0", "mongomock://m"]}


@pytest.fixture
def worker_process() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def run_worker(started: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "cogman", "-A", "tests.cli_app", "worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    started.append(process)
    return process


def read_until(process: subprocess.Popen[str], marker: str, stream: str = "stdout") -> list[str]:
    """Lines of ``stream`` up to and including the first holding ``marker`` (fails at EOF)."""
    source = getattr(process, stream)
    assert source is not None
    lines = []
    for line in source:
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    pytest.fail(f"{marker!r} never printed on {stream}: {lines}")


def test_at_the_default_level_the_banner_and_stop_line_are_printed(worker_process: list[subprocess.Popen[str]]):
    """Celery's default: WARNING, with the banner printed anyway; the ready and stop lines too."""
    process = run_worker(worker_process, "-c", "3", "-Q", "low")
    banner = read_until(process, "ready: 3 threads consuming low_priority_queue_0")
    text = "\n".join(banner)
    assert "cogman" in banner[0] and "app:          cli (tests.cli_app)" in text
    assert ".> broker:       memory://" in text and ".> low:  low_priority_queue_0 (1 queue)" in text
    assert "high_priority_queue" not in text
    assert "3 handler threads, 1 process (prefetch 6 per process)" in text
    assert "cli.echo  priority=high  retry=0" in text
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert out.strip().splitlines()[-1] == "stopped: 0 succeeded, 0 failed, 0 retried"
    assert "received SIGTERM; stopping gracefully" in err  # WARNING: an operator sees the stop was heard
    assert " INFO " not in err


def test_at_info_the_worker_logs_its_start_and_stop_instead(worker_process: list[subprocess.Popen[str]]):
    process = run_worker(worker_process, "-l", "info")
    read_until(process, "started", stream="stderr")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "stopped: 0 succeeded, 0 failed, 0 retried" in err
    assert "ready:" not in out and "stopped:" not in out  # printed only when the log hides them


def test_the_worker_logs_a_readable_stop_line(app: App, caplog: pytest.LogCaptureFixture):
    @app.task(name="stopline.ok")
    def ok() -> int:
        return 1

    @app.task(name="stopline.bad", retry=1)
    def bad() -> None:
        raise ValueError("no")

    worker = app.start_background(concurrency=2)
    try:
        assert [ok.delay().get(timeout=10) for _ in range(2)] == [1, 1]
        with pytest.raises(TaskFailed):
            bad.delay().get(timeout=10)
    finally:
        with caplog.at_level(logging.INFO, logger="cogman.worker"):
            worker.stop()
    assert any(r.getMessage().endswith("stopped: 2 succeeded, 1 failed, 1 retried") for r in caplog.records)


@pytest.mark.parametrize("processes", ["1", "2"])
def test_broker_and_backend_flags_override_the_apps_urls(
    rabbit: str, redis_url: str, processes: str, worker_process: list[subprocess.Popen[str]]
):
    """tests.cli_app names memory:// in its code; the flags move its worker (and each child process) to
    RabbitMQ and Redis, where a client in this process reaches it."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    process = run_worker(worker_process, "-c", "2", "--processes", processes, "--broker", rabbit,
                         "--backend", redis_url)  # fmt: skip
    banner = "\n".join(read_until(process, "ready: 2 threads"))
    user, secret = rabbit.split("://", 1)[1].split("@", 1)[0].split(":", 1)
    assert f".> broker:       amqp://{user}:****@" in banner and f"{user}:{secret}@" not in banner
    assert f".> backend:      {redis_url}" in banner
    client = App("cli-client", broker=rabbit, backend=redis_url)
    try:
        results = [client.send_task("cli.echo", args=(f"hello {i}",)) for i in range(4)]
        assert [r.get(timeout=60) for r in results] == [f"hello {i}" for i in range(4)]
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0


@pytest.fixture
def cli_app() -> Iterator[App]:
    """tests.cli_app's app, put back on its own configuration after ``--backend`` moved it."""
    from tests.cli_app import app

    config = app.config
    yield app
    app.reconfigure(config)


def test_operator_commands_on_memory_say_it_is_per_process(cli_app: App, capsys: pytest.CaptureFixture[str]):
    assert main(["-A", "tests.cli_app", "status", "some-id"]) == 1
    err = capsys.readouterr().err
    assert "memory:// backend, which is per process" in err and "never found here" in err
    assert "--backend redis://" in err and "no record for task some-id" in err
    assert main(["-A", "tests.cli_app", "ping"]) == 1  # a probe on memory:// can never pass: it says why
    assert "memory:// backend, which is per process" in capsys.readouterr().err
    assert main(["-A", "tests.cli_app", "status", "some-id", "--backend", "mongomock://cli_note"]) == 1
    assert "per process" not in capsys.readouterr().err
    assert cli_app.config.backend_url == "mongomock://cli_note"  # the flag reconfigured the app itself


def test_with_processes_each_child_says_ready_and_a_dead_child_stops_the_parent(
    worker_process: list[subprocess.Popen[str]],
):
    """The ready lines name each child's pid; a child killed from outside makes the parent exit non-zero
    (its process manager restarts it: the Kubernetes probe section of docs/api.md relies on it)."""
    import re

    process = run_worker(worker_process, "-c", "1", "--processes", "2")
    lines = read_until(process, "ready: 1 threads")
    lines += read_until(process, "ready: 1 threads")
    pids = [int(p) for p in re.findall(r"worker process \d \(pid (\d+)\): ready", "\n".join(lines))]
    assert len(pids) == 2 and process.pid not in pids
    assert sum(1 for line in lines if line.startswith(" -------------- cogman")) == 1  # one banner
    os.kill(pids[0], signal.SIGKILL)
    assert process.wait(60) == 1


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on TCP ``port``, as Linux lists them."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        path = Path(table)
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if int(port_hex, 16) != port or state != "0A":  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # host-order 32-bit words
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, packed))
    return found


@pytest.mark.parametrize(
    ("args", "address"),
    [
        ((), "127.0.0.1"),
        (("--metrics-host", "0.0.0.0"), "0.0.0.0"),
        (("--processes", "1", "--metrics-host", "0.0.0.0"), "0.0.0.0"),
    ],
    ids=["default", "every-interface", "every-interface-in-a-child"],
)
def test_the_metrics_listen_on_loopback_unless_told_otherwise(
    worker_process: list[subprocess.Popen[str]], args: tuple[str, ...], address: str
):
    """Issue 19, item 18: the endpoint names every task, so it is not on every interface by default."""
    port = free_ports()
    process = run_worker(worker_process, "--metrics-port", str(port), *args)
    banner = "\n".join(read_until(process, "ready: "))
    assert f"Prometheus on port {port} of {address}" in banner
    assert listening_addresses(port) == {address}
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 0
