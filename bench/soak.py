"""A soak under faults: sends tasks for a while, cuts connections and kills workers meanwhile, then
checks that every task the sender was told is accepted ran and ended ``success``.

``python bench/soak.py --seconds 120`` (a RabbitMQ vhost ``cogman_soak`` and Redis database 13 of its
own, emptied first). The sender and the workers reach RabbitMQ and Redis through TCP proxies
(tests/integration/tcp_proxy.py); every 1-3 seconds, one fault, chosen at random (``--seed``):

- ``rabbit-reset`` / ``redis-reset``: every connection reset, new ones refused for 0.3-2 s (``--longest-outage``);
- ``rabbit-freeze`` / ``redis-freeze``: sockets open, nothing forwarded for 0.3-2 s;
- ``worker-kill``: one worker SIGKILLed (its unacked messages are redelivered), a new one started.

The sender alternates ``.delay()`` and ``send_many`` of ``--batch`` tasks, ``--rate`` a second at
most. A send that raised is counted, not retried: the contract is about the ones that returned.
After the faults stop, the soak waits up to ``--settle`` seconds for every accepted task to have run
(a counter per task, written by the body to Redis directly) and to be recorded ``success``. Exit
status 1 if one did not: that is a lost task. Runs beyond the first (at-least-once allows them) are
reported, each with whether a killed worker explains it, not failed.
Not a test: its faults are random and its duration is wall-clock time (docs/guarantees.md).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from bench.rabbit import vhost_commands  # noqa: E402
from bench.soak_tasks import DIRECT_REDIS_URL, RUNNERS_KEY, RUNS_KEY, TASK_NAME, VHOST, make_app  # noqa: E402
from tests.integration.tcp_proxy import TcpProxy  # noqa: E402

FAULTS = ("rabbit-reset", "redis-reset", "rabbit-freeze", "redis-freeze", "worker-kill")


def reset_stores() -> None:
    """A fresh vhost (no queue, no message left from an earlier run) and an empty database."""
    rabbitmqctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
    subprocess.run([rabbitmqctl, "delete_vhost", VHOST], capture_output=True, timeout=60)
    for command in vhost_commands(VHOST):
        subprocess.run([rabbitmqctl, *command], check=True, capture_output=True, timeout=60)
    redis.Redis.from_url(DIRECT_REDIS_URL).flushdb()


class Workers:
    """``cogman worker`` processes, each a process group of its own so a kill takes all of it."""

    def __init__(self, count: int, concurrency: int, env: dict[str, str], logs: Path) -> None:
        self.concurrency, self.env, self.logs = concurrency, env, logs
        self.started = itertools.count()
        self.running: list[subprocess.Popen[bytes]] = [self._start() for _ in range(count)]
        self.killed: set[int] = set()

    def _start(self) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"worker-{next(self.started)}.log", "wb")  # noqa: SIM115 (the child keeps it)
        command = [sys.executable, "-m", "cogman", "-A", "bench.soak_tasks:app", "worker", "-c", str(self.concurrency)]
        return subprocess.Popen(
            command, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill_one(self, rng: random.Random) -> None:
        victim = self.running.pop(rng.randrange(len(self.running)))
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        self.killed.add(victim.pid)
        self.running.append(self._start())

    def check_alive(self) -> None:
        """A worker that exited on its own is a finding: the soak says so and replaces it."""
        for index, worker in enumerate(self.running):
            if worker.poll() is not None:
                print(f"soak: a worker exited on its own (status {worker.returncode}); see {self.logs}", flush=True)
                self.running[index] = self._start()

    def stop(self) -> None:
        for worker in self.running:
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.running:
            try:
                worker.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)


class Sender(threading.Thread):
    def __init__(self, broker: str, backend: str, batch: int, rate: float, send_mode: str) -> None:
        super().__init__(name="soak-sender", daemon=True)
        self.app = make_app(broker, backend, send_mode=send_mode)
        self.task, self.batch, self.rate = self.app.tasks[TASK_NAME], batch, rate
        self.accepted: dict[int, str] = {}
        self.raised: dict[int, str] = {}
        self.stopping = threading.Event()
        self.serials = itertools.count()
        #: Why the sender stopped before it was told to: the soak then fails, whatever the tasks did.
        self.died: BaseException | None = None

    def run(self) -> None:
        try:
            began = time.monotonic()
            for round_ in itertools.count():
                ahead = (len(self.accepted) + len(self.raised)) / self.rate - (time.monotonic() - began)
                if self.stopping.wait(max(0.0, ahead)):
                    return
                serials = [next(self.serials)] if round_ % 2 else [next(self.serials) for _ in range(self.batch)]
                try:
                    if len(serials) == 1:
                        results = [self.task.delay(serials[0])]
                    else:
                        results = self.task.send_many([(serial,) for serial in serials])
                except Exception as exc:  # counted as not accepted; the soak reports whether they ran anyway
                    self.raised.update((serial, type(exc).__name__) for serial in serials)
                    time.sleep(0.05)
                    continue
                self.accepted.update((serial, result.id) for serial, result in zip(serials, results, strict=True))
        except BaseException as exc:
            self.died = exc
            print(f"soak: the sender stopped: {exc!r}", flush=True)
            raise


def inject(fault: str, rng: random.Random, proxies: dict[str, TcpProxy], workers: Workers, longest: float) -> None:
    if fault == "worker-kill":
        workers.kill_one(rng)
        return
    service, kind = fault.split("-")
    proxy = proxies[service]
    outage = rng.uniform(0.3, longest)
    if kind == "reset":
        proxy.kill()
        time.sleep(outage)
        proxy.start()
    else:
        proxy.freeze()
        time.sleep(outage)
        proxy.thaw()


def settle(sender: Sender, deadline: float, workers: Workers) -> tuple[dict[int, int], dict[str, str], float | None]:
    """Wait until every accepted task ran, then until each is recorded final, or the deadline. The runs and
    statuses seen last, and how long after the faults every task had run (None: some never did)."""
    from cogman import App

    began = time.monotonic()
    runs_store = redis.Redis.from_url(DIRECT_REDIS_URL)
    all_ran_after: float | None = None
    while time.monotonic() < deadline:
        runs = {int(k): int(v) for k, v in runs_store.hgetall(RUNS_KEY).items()}
        if all(runs.get(serial, 0) >= 1 for serial in sender.accepted):
            all_ran_after = time.monotonic() - began
            break
        workers.check_alive()
        time.sleep(0.2)
    checker = App("soak-check", broker="memory://", backend=DIRECT_REDIS_URL)
    pending = dict(sender.accepted)
    statuses: dict[str, str] = {}
    while True:
        for serial, task_id in list(pending.items()):
            record = checker.backend.get(task_id)
            statuses[task_id] = "missing" if record is None else record.status.value
            if statuses[task_id] == "success":
                del pending[serial]
        if not pending or time.monotonic() > deadline:
            break
        workers.check_alive()
        time.sleep(0.5)
    checker.close()
    return {int(k): int(v) for k, v in runs_store.hgetall(RUNS_KEY).items()}, statuses, all_ran_after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long faults are injected")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50, help="tasks a send_many call")
    parser.add_argument("--rate", type=float, default=1000.0, help="tasks a second at most (no backlog)")
    parser.add_argument("--send-mode", choices=("recorded", "confirmed"), default="recorded")
    parser.add_argument("--longest-outage", type=float, default=2.0, help="seconds a cut or freeze lasts at most")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settle", type=float, default=180.0, help="seconds to wait for every task afterwards")
    options = parser.parse_args()

    reset_stores()
    proxies = {"rabbit": TcpProxy(5672), "redis": TcpProxy(6379)}
    for proxy in proxies.values():
        proxy.start()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env["SOAK_BROKER_URL"] = proxies["rabbit"].url(f"amqp://guest:guest@127.0.0.1:5672/{VHOST}")
    env["SOAK_BACKEND_URL"] = f"redis://127.0.0.1:{proxies['redis'].port}/13"
    logs = Path(tempfile.mkdtemp(prefix="cogman-soak-"))
    workers = Workers(options.workers, options.concurrency, env, logs)
    sender = Sender(env["SOAK_BROKER_URL"], env["SOAK_BACKEND_URL"], options.batch, options.rate, options.send_mode)
    sender.start()

    rng = random.Random(options.seed)
    injected: collections.Counter[str] = collections.Counter()
    end = time.monotonic() + options.seconds
    while time.monotonic() < end:
        time.sleep(rng.uniform(1.0, 3.0))
        fault = rng.choice(FAULTS)
        injected[fault] += 1
        began = time.time()
        inject(fault, rng, proxies, workers, options.longest_outage)
        print(f"{time.strftime('%H:%M:%S', time.localtime(began))} {fault} for {time.time() - began:.1f} s", flush=True)
        workers.check_alive()
    sender.stopping.set()
    sender.join(timeout=60)
    runs, statuses, all_ran_after = settle(sender, time.monotonic() + options.settle, workers)
    workers.stop()
    sender.app.close()
    return report(sender, runs, statuses, injected, all_ran_after, logs, workers.killed)


@dataclass
class Verdict:
    """What became of the accepted tasks: serials lost, not ``success``, run more than once, and of those
    the ones no killed worker explains (a first run in a process that was not killed)."""

    lost: list[int]
    unfinished: list[int]
    duplicates: list[int]
    unexplained: list[int]

    @property
    def ok(self) -> bool:
        return not self.lost and not self.unfinished


def judge(
    accepted: dict[int, str],
    runs: dict[int, int],
    statuses: dict[str, str],
    runners: dict[int, list[int]],
    killed: set[int],
) -> Verdict:
    """``runners``: for each serial run more than once, the pids of its runs in order."""
    lost = [serial for serial in accepted if runs.get(serial, 0) < 1]
    unfinished = [serial for serial, task_id in accepted.items() if statuses.get(task_id) != "success"]
    duplicates = [serial for serial in accepted if runs.get(serial, 0) > 1]
    unexplained = [serial for serial in duplicates if not killed.intersection(runners.get(serial, [])[:-1])]
    return Verdict(lost, unfinished, duplicates, unexplained)


def report(sender: Sender, runs: dict[int, int], statuses: dict[str, str], injected: Any, all_ran_after: float | None,
           logs: Path, killed: set[int]) -> int:  # fmt: skip
    accepted = sender.accepted
    store = redis.Redis.from_url(DIRECT_REDIS_URL)
    runners = {serial: [int(pid) for pid in store.lrange(f"{RUNNERS_KEY}:{serial}", 0, -1)]
               for serial in accepted if runs.get(serial, 0) > 1}  # fmt: skip
    verdict = judge(accepted, runs, statuses, runners, killed)
    raised_ran = sum(1 for serial in sender.raised if runs.get(serial, 0) >= 1)
    print(f"faults injected: {dict(sorted(injected.items()))}")
    print(f"accepted: {len(accepted)}  raised: {len(sender.raised)} "
          f"({dict(collections.Counter(sender.raised.values()))}; {raised_ran} of them ran anyway)")  # fmt: skip
    print(f"accepted and never ran: {len(verdict.lost)}  not recorded success: {len(verdict.unfinished)}  "
          f"ran more than once: {len(verdict.duplicates)} ({len(verdict.unexplained)} not after a killed "
          f"worker's run)")  # fmt: skip
    if all_ran_after is not None:
        print(f"every accepted task had run {all_ran_after:.1f} s after the last fault")
    if verdict.unexplained:
        print(f"runs beyond the first not explained by a kill, serials: {verdict.unexplained[:20]}; logs in {logs}")
    if sender.died is not None:
        print(f"FAILED: the sender stopped early ({sender.died!r}); the figures above cover only what it sent")
        return 1
    if not verdict.ok:
        not_success = [(serial, statuses.get(accepted[serial])) for serial in verdict.unfinished[:20]]
        print(f"LOST: serials {verdict.lost[:20]}; not success: {not_success}; worker logs in {logs}")
        return 1
    print("OK: every accepted task ran and is recorded success")
    return 0


if __name__ == "__main__":
    sys.exit(main())
