"""Issue 11's workflows on the real RabbitMQ and Redis, sent from this process and run by worker processes:
chain, group and chord results, a failure stopping a chain, a chord's callback run once when members
finish at the same moment on two processes, and when a member's worker is SIGKILLed mid-run."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cogman import App, Signature, Status, StepFailed, chain, chord, group
from tests.integration.rabbit_helpers import consumer_count, wait_for, worker_process

APP = "tests.integration.workflow_app"


@pytest.fixture
def env(worker_env: dict[str, str]) -> dict[str, str]:
    return worker_env


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[App]:
    """A client without the task functions: it names them (signatures by name), as a web app would."""
    app = App("flow-client", broker=env["COGMAN_BROKER_URL"], backend=env["COGMAN_BACKEND_URL"],
              redis_prefix=env["COGMAN_TEST_PREFIX"])  # fmt: skip
    yield app
    app.close()


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def start_worker(workers: list, env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    process = worker_process(APP, env, *args, log=tmp_path / f"worker-{len(workers)}.log")
    workers.append(process)
    return process


def s(app: App, name: str, *args: object) -> Signature:
    return Signature(f"wf.{name}", args, app=app)


def runs(env: dict[str, str], name: str) -> dict[str, int]:
    counts = redis.Redis.from_url(env["COGMAN_BACKEND_URL"]).hgetall(f"{env['COGMAN_TEST_PREFIX']}:runs:{name}")
    return {key.decode(): int(value) for key, value in counts.items()}


def pids(env: dict[str, str], name: str, key: str) -> list[int]:
    found = redis.Redis.from_url(env["COGMAN_BACKEND_URL"]).lrange(
        f"{env['COGMAN_TEST_PREFIX']}:pids:{name}:{key}", 0, -1
    )
    return [int(pid) for pid in found]


def consumers(rabbit: str) -> int:
    try:
        return consumer_count(rabbit, "high_priority_queue_0")
    except Exception:  # not declared yet
        return 0


def open_gate(env: dict[str, str], gate: str) -> None:
    redis.Redis.from_url(env["COGMAN_BACKEND_URL"]).set(f"{env['COGMAN_TEST_PREFIX']}:gate:{gate}", 1)


def test_chain_group_and_chord_across_processes(client: App, env: dict[str, str], workers: list, tmp_path: Path):
    start_worker(workers, env, tmp_path, "-c", "4")
    start_worker(workers, env, tmp_path, "-c", "4")
    assert chain(s(client, "add", 1, 2), s(client, "add", 10), s(client, "mul", 3)).delay().get(timeout=60) == 39
    assert group(s(client, "add", i, i) for i in range(100)).delay().get(timeout=60) == [2 * i for i in range(100)]
    result = chord(group(s(client, "add", i, i) for i in range(100)), s(client, "total")).delay()
    assert result.get(timeout=60) == 9900
    assert runs(env, "total") == {result.id: 1}


def test_a_failing_step_stops_the_chain_across_processes(
    client: App, env: dict[str, str], workers: list, tmp_path: Path
):
    start_worker(workers, env, tmp_path, "-c", "4")
    result = chain(s(client, "add", 1, 2), s(client, "fails"), s(client, "mul", 3)).delay()
    with pytest.raises(StepFailed) as raised:
        result.get(timeout=60)
    assert raised.value.step == "chain step 2 of 3 (wf.fails)" and raised.value.attempts == 2
    assert raised.value.error == "ValueError: cannot take 3"
    last = client.backend.get(result.id)
    assert last is not None and last.status is Status.FAILED and last.name == "wf.mul"
    assert last.fail_error == "not run: step 2 (wf.fails) failed: ValueError: cannot take 3"


def test_a_partial_chord_across_processes(client: App, env: dict[str, str], workers: list, tmp_path: Path):
    start_worker(workers, env, tmp_path, "-c", "4")
    members = [s(client, "add", 1, 1), s(client, "fails", 2), s(client, "add", 3, 3)]
    assert chord(members, s(client, "listed"), partial=True).delay().get(timeout=60) == [2, None, 6]
    with pytest.raises(StepFailed, match=r"chord member 2 of 3 \(wf.fails\)"):
        chord(members, s(client, "listed")).delay().get(timeout=60)


def test_the_callback_runs_once_when_members_finish_together_on_two_processes(
    client: App, env: dict[str, str], workers: list, tmp_path: Path, rabbit: str
):
    """Eight members wait at a gate, spread over two worker processes by RabbitMQ's round robin; the gate
    opens and they all finish at once: the members that find the chord complete race to send the
    callback, and it runs once. Three chords in a row."""
    first = start_worker(workers, env, tmp_path, "-c", "8")
    second = start_worker(workers, env, tmp_path, "-c", "8")
    wait_for(lambda: consumers(rabbit) >= 2, 60, "both workers to consume")
    ran_on: set[int] = set()
    for round_ in range(3):
        gate = f"together-{round_}"
        result = chord([s(client, "gated", gate, i) for i in range(8)], s(client, "total")).delay()
        wait_for(
            lambda gate=gate: sum(k.startswith(gate) for k in runs(env, "gated")) == 8, 60, "every member to start"
        )
        ran_on.update(pid for i in range(8) for pid in pids(env, "gated", f"{gate}:{i}"))
        open_gate(env, gate)
        assert result.get(timeout=60) == 28
        assert runs(env, "total")[result.id] == 1
    assert ran_on == {first.pid, second.pid}
    assert len(runs(env, "total")) == 3


def test_a_member_whose_worker_is_killed_mid_run_is_redelivered_and_the_callback_runs_once(
    client: App, env: dict[str, str], workers: list, tmp_path: Path
):
    victim = start_worker(workers, env, tmp_path, "-c", "4")
    result = chord([s(client, "gated", "kill", i) for i in range(4)], s(client, "total")).delay()
    wait_for(lambda: len(runs(env, "gated")) == 4, 60, "the members to start on the victim")
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    start_worker(workers, env, tmp_path, "-c", "4")
    wait_for(lambda: set(runs(env, "gated").values()) == {2}, 60, "RabbitMQ to redeliver every member")
    open_gate(env, "kill")
    assert result.get(timeout=60) == 6
    assert runs(env, "total") == {result.id: 1}
    assert all(len(pids(env, "gated", f"kill:{i}")) == 2 for i in range(4))
