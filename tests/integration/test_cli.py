"""The cogman command, run as a user runs it: in a subprocess, from the project root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cogman import __version__
from cogman.cli.main import AppPathError, load_app, main

ROOT = Path(__file__).resolve().parents[2]


def cogman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cogman", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_version():
    done = cogman("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"cogman {__version__}"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_xyz", "no module named 'no_such_module_xyz'"),
        ("tests.cli_app:nothing", "has no attribute 'nothing'; App objects in it: app"),
        ("tests.cli_app:not_an_app", "is a int, not a cogman App"),
        (":app", "give a module"),
    ],
)
def test_bad_app_paths_are_explained(path: str, message: str):
    with pytest.raises(AppPathError, match=message):
        load_app(path)
    assert main(["-A", path, "status", "x"]) == 2


def test_worker_needs_an_app(capsys: pytest.CaptureFixture[str]):
    assert main(["worker"]) == 2
    assert "needs -A module[:attr]" in capsys.readouterr().err


def test_status_of_unknown_task(capsys: pytest.CaptureFixture[str]):
    assert main(["-A", "tests.cli_app", "status", "nope"]) == 1
    assert "no record for task nope" in capsys.readouterr().err


def test_worker_warns_on_memory_broker_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "cogman", "-A", "tests.cli_app", "worker", "-c", "2", "-Q", "high", "-l", "INFO"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "started" in line:
            break
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=30) == 0
    output = "".join(lines) + rest
    assert "memory:// broker: only tasks sent from inside this process reach it" in output
    assert "concurrency=2 queues=high" in output
    assert "received SIGTERM; stopping gracefully" in output


def test_demo_runs_and_summarises():
    done = cogman("demo", "--tasks", "60", "--concurrency", "4")
    assert done.returncode == 0, done.stderr
    assert "what the backend recorded" in done.stdout
    assert "demo.flaky" in done.stdout and "priorities, measured" in done.stdout


def test_status_shows_the_record_and_the_chains_latest_attempt(capsys: pytest.CaptureFixture[str]):
    import json

    from cogman import App, TaskFailed

    app = App("status", broker="memory://", backend="memory://")

    @app.task(name="status.flaky", retry=1)
    def flaky() -> None:
        raise OSError("disk full")

    worker = app.start_background(concurrency=1)
    try:
        result = flaky.delay()
        with pytest.raises(TaskFailed):
            result.get(timeout=10)
    finally:
        worker.stop()
    from cogman.cli.main import _status

    assert _status(app, result.id) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["task_id"] == result.id and shown["status"] == "failed" and shown["retry"] == 0
    assert shown["latest_attempt"]["original_task_id"] == result.id
    assert shown["latest_attempt"]["attempt"] == 2
    assert shown["latest_attempt"]["fail_error"] == "OSError: disk full"
