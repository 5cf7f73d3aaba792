"""The operator's subcommands, run as a user runs them (``python -m cogman -A tests.admin_app ...`` in a
subprocess), against RabbitMQ and Redis, with tasks run by a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from cogman import App
from cogman.admin.actions import PURGED
from cogman.status import Status
from tests.admin_app import register
from tests.integration.api_helpers import free_port, wait_for_api, wait_until_final
from tests.integration.rabbit_helpers import ROOT, wait_for


@pytest.fixture
def env(worker_env: dict[str, str]) -> dict[str, str]:
    return worker_env


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[App]:
    app = register(App("admin", broker=env["COGMAN_BROKER_URL"], backend=env["COGMAN_BACKEND_URL"],
                       redis_prefix=env["COGMAN_TEST_PREFIX"]))  # fmt: skip
    yield app
    app.close()


def cogman(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cogman", "-A", "tests.admin_app", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
    )


def delayed_row(stdout: str) -> list[str]:
    """The cells of ``cogman queues``'s one row for the delay ladder's levels."""
    line = next(line for line in stdout.splitlines() if "delayed" in line)
    return [cell.strip() for cell in line.split("│")[1:-1]]


def test_queues_and_purge(env: dict[str, str], client: App):
    waiting = [client.send_task("admin.add", (i, i)) for i in range(3)]  # no worker: they wait in the queue
    later = [client.send_task("admin.add", (i, i), countdown=3600) for i in range(2)]  # in the delay ladder
    for result in later:
        assert result.wait_sent(30)
    queues = cogman(env, "queues")
    assert queues.returncode == 0, queues.stderr
    row = next(line for line in queues.stdout.splitlines() if "high_priority_queue_0" in line)
    assert row.split("│")[3].strip() == "3"
    total = next(line for line in queues.stdout.splitlines() if "total" in line)
    assert total.split("│")[3].strip() == "3"  # delayed tasks are not waiting for a worker
    assert delayed_row(queues.stdout)[:4] == ["cogman.delay.0 .. cogman.delay.27", "delayed", "2", "-"]

    refused = cogman(env, "purge", stdin="")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    purged = cogman(env, "purge", "--yes")
    assert purged.returncode == 0 and "purged 3 message(s)" in purged.stdout, purged.stderr
    for result in waiting:
        record = client.backend.get(result.id)
        assert record is not None and (record.status, record.fail_error) == (Status.FAILED, PURGED)
    after = cogman(env, "queues").stdout
    assert next(line for line in after.splitlines() if "high_priority_queue_0" in line).split("│")[3].strip() == "0"
    assert delayed_row(after)[2] == "2"  # purge leaves delayed tasks alone (docs/scheduling.md)


def test_list_inspect_and_retry(env: dict[str, str], client: App):
    worker = client.start_background(concurrency=2)
    try:
        added = [client.send_task("admin.add", (i, 1)) for i in range(3)]
        failed = client.send_task("admin.fail", ("no disk",))
        wait_until_final([*added, failed])

        listed = cogman(env, "list", "--status", "failed")
        assert listed.returncode == 0 and failed.id in listed.stdout and "1 of 1 record(s)" in listed.stdout
        assert "ValueError: no disk" in listed.stdout
        one = cogman(env, "list", "--name", "admin.add", "--limit", "1")
        assert "1 of 3 record(s)" in one.stdout and sum(r.id in one.stdout for r in added) == 1
        assert cogman(env, "list", "--limit", "0").returncode == 2  # argparse: must be between 1 and 1000

        shown = cogman(env, "inspect", failed.id)
        assert shown.returncode == 0 and "ValueError: no disk" in shown.stdout and "attempts of" in shown.stdout
        assert cogman(env, "inspect", "nope").returncode == 1

        retried = cogman(env, "retry", failed.id)
        assert retried.returncode == 0 and "(attempt 2)" in retried.stdout, retried.stderr
        wait_for(lambda: len(json.loads(cogman(env, "inspect", failed.id, "--json").stdout)["attempts"]) == 2
                 and client.result(failed.id).ready(), 60, "the retry to run")  # fmt: skip
        as_json = json.loads(cogman(env, "inspect", failed.id, "--json").stdout)
        assert [(a["attempt"], a["status"]) for a in as_json["attempts"]] == [(1, "failed"), (2, "failed")]

        not_failed = cogman(env, "retry", added[0].id)
        assert not_failed.returncode == 1 and "is not failed" in not_failed.stderr
        assert cogman(env, "retry", added[0].id, "--force").returncode == 0
        assert cogman(env, "retry", "nope").returncode == 1
    finally:
        worker.stop()


def test_retry_of_a_chain_step_that_never_ran_is_refused_naming_what_to_retry(env: dict[str, str], client: App):
    from cogman import Signature, chain

    worker = client.start_background(concurrency=2)
    try:
        steps = [Signature("admin.add", (1, 2), app=client), Signature("admin.fail"), Signature("admin.add", (1,))]
        result = chain(*steps).delay()
        wait_for(lambda: client.backend.get(result.id) is not None, 60, "the chain to stop at step 2")
        refused = cogman(env, "retry", result.id, "--force")
        assert refused.returncode == 1 and "never ran (not run: step 2 (admin.fail) failed" in refused.stderr
        assert "retry the step that failed instead" in refused.stderr
        assert cogman(env, "retry", result.ids[1]).returncode == 0  # the failed step itself: retried
    finally:
        worker.stop()


def test_api_refuses_an_open_bind_without_a_token(env: dict[str, str]):
    refused = cogman(env, "api", "--host", "0.0.0.0")
    assert refused.returncode == 2 and "refusing to serve the API on 0.0.0.0 without a token" in refused.stderr


def test_api_command_serves_with_a_token(env: dict[str, str]):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cogman", "-A", "tests.admin_app", "api", "--host", "0.0.0.0", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **env, "COGMAN_API_TOKEN": "cli-token", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_api(base)
        assert httpx.get(base + "/list").status_code == 401
        assert httpx.get(base + "/list", headers={"Authorization": "Bearer cli-token"}).status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
