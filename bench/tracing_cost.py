"""What tracing costs a task: ``python bench/tracing_cost.py [-n 20000] [--repeat 5]`` (``nox -s tracing_cost``).

Calls the middleware hooks of ``n`` tasks (``hooks alone``: one send and one attempt each, as the client and
the worker call them: what tracing adds, without the rest), sends ``n`` tasks on memory:// (``send``:
``.delay()`` alone, no worker) and runs ``n`` more in eager mode (``send + run``: ``.delay()`` records,
publishes, and runs each through the worker's executor before it returns), in a fresh process per mode,
and prints microseconds per task, the best of ``--repeat`` runs:

* ``absent``: opentelemetry cannot be imported (as without ``pip install cogman[otel]``);
* ``off``: installed, ``App(tracing=False)``;
* ``on, no provider``: installed, on, but the program configured no tracer provider (no-op spans);
* ``on, SDK``: a TracerProvider of opentelemetry-sdk with a span processor that drops every span, so the
  figure is cogman's spans and the SDK's span making, without any exporter's cost.

docs/tracing.md shows the figures; one machine's, on a quiet moment, as every figure there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("absent", "off", "on, no provider", "on, SDK")


def measure(mode: str, n: int) -> dict[str, float]:
    """In this process (a fresh one per mode): microseconds per task, sending and sending + running."""
    if mode == "absent":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # import opentelemetry fails
    if mode == "on, SDK":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        provider = TracerProvider()
        provider.add_span_processor(SpanProcessor())  # the base processor: takes every span, keeps none
        trace.set_tracer_provider(provider)
    from cogman import App

    figures = {"hooks": hooks(App("hooks", broker="memory://", backend="memory://", **_options(mode)), n)}
    for label, eager in (("send", False), ("send + run", True)):
        app = App("cost", broker="memory://", backend="memory://", eager=eager, heartbeat_interval=0, **_options(mode))

        @app.task(name="cost.noop")
        def noop(i: int) -> int:
            return i

        for i in range(min(1000, n)):  # warm up: connections, caches, the first spans
            noop.delay(i)
        begun = time.perf_counter()
        for i in range(n):
            noop.delay(i)
        figures[label] = (time.perf_counter() - begun) / n * 1e6
        app.close()
    return figures


def _options(mode: str) -> dict[str, bool]:
    return {} if mode == "absent" else {"tracing": mode != "off"}


def hooks(app: Any, n: int) -> float:
    """Microseconds of the middleware hooks one task goes through, called as the client and the worker
    call them (one send of one message, one attempt), on the app's stack: what tracing adds, alone."""
    from cogman.message import Message
    from cogman.priority import Priority

    stack = app.middleware
    messages = [Message(f"id-{i}", "cost.noop", f"id-{i}", Priority.HIGH, args=(i,)) for i in range(n)]
    begun = time.perf_counter()
    for message in messages:
        with stack.sending(message.name, [message]):
            stack.before("before_send", message)
            stack.after("after_send", message)
        stack.before("before_execute", message)
        stack.after("after_execute", message, result=1)
        stack.after("after_outcome", message, "succeeded")
    return (time.perf_counter() - begun) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="tasks per measure (default 20000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per mode; the best is shown (default 5)")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # a child process's one measure
    args = parser.parse_args()
    if args.mode is not None:
        print(json.dumps(measure(args.mode, args.n)))
        return 0
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for mode in MODES:
            run = [sys.executable, __file__, "--mode", mode, "-n", str(args.n)]
            done = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{mode}: failed\n{done.stderr}", file=sys.stderr)
                return 1
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            for label, value in figures.items():
                best.setdefault(mode, {})[label] = min(value, best.get(mode, {}).get(label, value))
    print(f"µs per task, best of {args.repeat} runs of {args.n} tasks, memory:// broker and backend\n")
    print("| tracing | hooks alone | send | send + run (eager) |")
    print("|---|---|---|---|")
    for mode in MODES:
        figures = best[mode]
        print(f"| {mode} | {figures['hooks']:.1f} | {figures['send']:.1f} | {figures['send + run']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
