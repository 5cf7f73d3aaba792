"""Where a task's time goes: py-spy samples the sending client and the worker, and the top frames are printed.

``nox -s profile`` (or ``python bench/profile.py`` in a venv with py-spy). Two phases on the benchmark's
vhost and Redis database (bench/settings.py), one after the other:

1. **client**: one process sends N tasks with ``.delay()`` (the default ``send_mode``), no worker running;
2. **worker**: ``cogman -A bench.cogman_tasks:app worker -c 8`` (one process) drains that backlog.

py-spy records every thread of the process that it does not see idle (a thread waiting for the GIL
counts as busy); with ``--gil``, only the thread holding the GIL: where the interpreter's CPU goes.
Each phase prints two tables: the frames where samples were taken (self) and the frames on the stack
(inclusive), as shares of all samples.
Collapsed stacks go to ``bench/results/profile-<phase>.txt``, for a flame graph (``flamegraph.pl``,
speedscope).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rabbit import Admin, ensure_vhost  # noqa: E402
from bench.settings import AMQP_URL, REDIS_URL, done_key  # noqa: E402

QUEUES = ("high_priority_queue_0", "low_priority_queue_0")


def send(tasks: int, lean: bool) -> None:
    """The client phase's process: N single sends, then close (which waits for the last confirms)."""
    from bench.cogman_tasks import TASK_NAME, make_app

    app = make_app(profile="lean") if lean else make_app()
    started = time.perf_counter()
    for _ in range(tasks):
        app.send_task(TASK_NAME, args=(0.0,))
    app.close()
    print(f"profile: sent {tasks:,} in {time.perf_counter() - started:.2f} s", flush=True)


def record(out: Path, command: list[str], rate: int, gil: bool) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("profile: py-spy is not installed (pip install py-spy, or run nox -s profile)")
    options = ["--format", "raw", "--rate", str(rate), "--nonblocking", *(["--gil"] if gil else []), "-o", str(out)]
    return subprocess.Popen([py_spy, "record", *options, "--", *command], cwd=ROOT)


def frame_name(frame: str) -> str:
    """``send_task (cogman/app.py:201)`` -> ``send_task (cogman/app.py)``: lines split one function's samples."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def top_frames(collapsed: Path, count: int) -> str:
    own: Counter[str] = Counter()
    on_stack: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        frames = [frame_name(f) for f in stack.split(";") if not f.startswith(("process ", "thread ("))]
        if not frames:
            continue
        weight = int(samples)
        total += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            on_stack[frame] += weight
    lines = [f"{total:,} samples", "", "| self | inclusive | frame |", "|---|---|---|"]
    listed = [name for name, _ in own.most_common(count)]
    listed += [name for name, _ in on_stack.most_common(count) if name not in listed]
    for name in sorted(listed, key=lambda n: -on_stack[n])[: count * 2]:
        lines.append(f"| {100 * own[name] / total:.1f}% | {100 * on_stack[name] / total:.1f}% | `{name}` |")
    return "\n".join(lines)


def purge(admin: Admin) -> None:
    for queue in QUEUES:
        admin._on_channel("purge", queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples a second")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--gil", action="store_true", help="only samples of the thread holding the GIL (CPU)")
    parser.add_argument("--lean", action="store_true", help='the lean profile (App(profile="lean")) on both sides')
    parser.add_argument("--send", type=int, help=argparse.SUPPRESS)  # the client phase's own process
    args = parser.parse_args()
    if args.send is not None:
        send(args.send, args.lean)
        return
    ensure_vhost(AMQP_URL)
    admin = Admin(AMQP_URL)
    counter = redis.Redis.from_url(REDIS_URL)
    counter.flushdb()
    purge(admin)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    os.environ["PYTHONPATH"] = str(ROOT)

    client_out = results / "profile-client.txt"
    client = [sys.executable, "bench/profile.py", "--send", str(args.tasks), *(["--lean"] if args.lean else [])]
    sender = record(client_out, client, args.rate, args.gil)
    if sender.wait() != 0:
        raise SystemExit("profile: the client phase failed")
    backlog = sum(admin._on_channel("depth", q) for q in QUEUES)
    print(f"profile: {backlog:,} messages waiting", flush=True)

    worker_out = results / "profile-worker.txt"
    worker_app = "bench.cogman_lean_tasks:app" if args.lean else "bench.cogman_tasks:app"
    spy = record(worker_out, [sys.executable, "-m", "cogman", "-A", worker_app, "worker", "-c", "8"],
                 args.rate, args.gil)  # fmt: skip
    started = time.perf_counter()
    while int(counter.get(done_key("cogman")) or 0) < args.tasks:
        if spy.poll() is not None:
            raise SystemExit("profile: the worker stopped before draining the backlog")
        time.sleep(0.05)
    print(f"profile: drained {args.tasks:,} in {time.perf_counter() - started:.2f} s (boot included)", flush=True)
    import psutil  # the bench session's, not a cogman dependency

    for worker in psutil.Process(spy.pid).children():  # py-spy writes its file once the worker exits
        worker.send_signal(signal.SIGTERM)
    spy.wait(timeout=60)
    purge(admin)
    counter.flushdb()

    for phase, out in (("client (.delay() in a loop)", client_out), ("worker (-c 8, draining)", worker_out)):
        print(f"\n## {phase}\n\n{top_frames(out, args.top)}")


if __name__ == "__main__":
    main()
