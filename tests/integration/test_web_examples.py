"""examples/fastapi_app.py and examples/flask_app.py run as written: each served by its own server
process (uvicorn, ``flask run``), with a ``cogman worker`` process on RabbitMQ and Redis, or alone on
memory:// (the example then starts a worker in its own process); their endpoints hit over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.integration.redis_helpers import drop_prefix
from tests.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]

SERVERS = {
    "fastapi": lambda port: [sys.executable, "-m", "uvicorn", "examples.fastapi_app:api", "--port", str(port)],
    "flask": lambda port: [sys.executable, "-m", "flask", "--app", "examples.flask_app", "run", "--port", str(port)],
}


@contextmanager
def running(command: list[str], env: dict[str, str], stop: int = signal.SIGTERM) -> Iterator[subprocess.Popen[str]]:
    """A process started from the repository root, sent ``stop`` afterwards (a server: SIGINT, Ctrl-C);
    it must then exit with 0, having logged no traceback but those of the example's failing task."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        process.send_signal(stop)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert process.returncode == 0, stderr
        tracebacks = stderr.split("Traceback (most recent call last):")[1:]
        unexpected = [t for t in tracebacks if "ValueError: cannot price -1 items" not in t]  # the failing task's
        assert unexpected == [], stderr
        if "uvicorn" in command:
            assert "Application shutdown complete." in stderr, stderr  # the lifespan's aclose ran


def serving(base: str, process: subprocess.Popen[str]) -> httpx.Client:
    """An HTTP client once the server answers (it has just been started: poll until it listens)."""
    client = httpx.Client(base_url=base, timeout=60)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            client.get("/tasks/none")
            return client
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{base} never answered"
            time.sleep(0.05)


def exercise(client: httpx.Client) -> None:
    """What both examples answer: a task sent, its status and result; a failing one; an unknown id."""
    sent = client.post("/orders", params={"items": 3})
    assert sent.status_code == 202, sent.text
    task_id = sent.json()["task_id"]
    result = client.get(f"/tasks/{task_id}/result", params={"timeout": 30})
    assert result.status_code == 200, result.text
    assert result.json() == {"task_id": task_id, "result": 30}
    assert client.get(f"/tasks/{task_id}").json() == {"task_id": task_id, "status": "success"}

    failing = client.post("/orders", params={"items": -1}).json()["task_id"]
    failed = client.get(f"/tasks/{failing}/result", params={"timeout": 30})
    assert failed.status_code == 500, failed.text
    body = failed.json()
    details = body.get("detail", body)  # FastAPI wraps an HTTPException's detail
    assert details["attempts"] == 3  # retry=2
    assert "ValueError: cannot price -1 items" in details["error"]

    assert client.get(f"/tasks/{uuid.uuid4()}").status_code == 404


@pytest.mark.parametrize("framework", sorted(SERVERS))
def test_example_on_rabbitmq_and_redis_with_a_worker_process(framework: str, rabbit: str, redis_url: str) -> None:
    prefix = f"web-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "COGMAN_BROKER_URL": rabbit,
        "COGMAN_BACKEND_URL": redis_url,
        "COGMAN_REDIS_PREFIX": prefix,
    }
    port = free_ports()
    worker = [sys.executable, "-m", "cogman", "-A", f"examples.{framework}_app", "worker", "-c", "2"]
    try:
        with running(worker, env), running(SERVERS[framework](port), env, signal.SIGINT) as server:
            exercise(serving(f"http://127.0.0.1:{port}", server))
    finally:
        drop_prefix(redis_url, prefix)


@pytest.mark.parametrize("framework", sorted(SERVERS))
def test_example_on_memory_alone(framework: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COGMAN_")}
    env["PYTHONPATH"] = str(ROOT)
    port = free_ports()
    with running(SERVERS[framework](port), env, signal.SIGINT) as server:
        exercise(serving(f"http://127.0.0.1:{port}", server))
