"""What a rate limit or a concurrency limit costs a task that is admitted:
``python bench/limits_cost.py [--backend URL]... [-n 2000] [--repeat 5]``.

For each backend (default: ``memory://`` and the local Redis, db 3), two measures, microseconds per task,
the best of ``--repeat`` runs (interleaved):

* ``store``: the limits store's calls alone, as the worker makes them for one admitted start: a rate
  limit is one ``take_start``; a concurrency limit is ``acquire_slot`` then ``release_slot``; both, all
  three;
* ``send + run``: ``n`` tasks sent and run in eager mode (``.delay()`` records, publishes and runs each
  through the worker's executor, admission included, before it returns), for a task with no limit, with
  ``rate_limit`` and with ``max_concurrency`` (limits far above what the run reaches, so nothing waits).

A task over its limit costs more: one note of why it waits, a publish to the delay ladder and an ack,
each time it comes back and is refused again (docs/control.md). docs/control.md shows the figures.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

from cogman import App
from cogman.limits.policy import Rate

HUGE = Rate(10_000_000, 3600.0)


def per_task(run: Callable[[int], None], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        begun = time.perf_counter()
        run(n)
        best = min(best, (time.perf_counter() - begun) / n * 1e6)
    return best


def store_costs(app: App, n: int, repeat: int) -> dict[str, float]:
    store = app.backend.limits()
    scope = f"bench-{uuid.uuid4().hex[:8]}"

    def rate(count: int) -> None:
        for _ in range(count):
            store.take_start(scope, HUGE, uuid.uuid4().hex)

    def slot(count: int) -> None:
        for _ in range(count):
            holder = uuid.uuid4().hex
            store.acquire_slot(scope, holder, 1_000_000, 60.0)
            store.release_slot(scope, holder)

    def both(count: int) -> None:
        for _ in range(count):
            holder = uuid.uuid4().hex
            store.acquire_slot(scope, holder, 1_000_000, 60.0)
            store.take_start(scope + ":r", HUGE, holder)
            store.release_slot(scope, holder)

    return {name: per_task(fn, n, repeat) for name, fn in (("rate", rate), ("slot", slot), ("both", both))}


def run_costs(backend: str, n: int, repeat: int) -> dict[str, float]:
    app = App(
        "limits-bench", broker="memory://", backend=backend, eager=True, redis_prefix=f"bench-{uuid.uuid4().hex[:6]}"
    )
    plain = app.task(name="bench.plain")(lambda: None)
    rated = app.task(name="bench.rated", rate_limit="10000000/h")(lambda: None)
    slotted = app.task(name="bench.slotted", max_concurrency=1_000_000)(lambda: None)
    tasks = {"no limit": plain, "rate_limit": rated, "max_concurrency": slotted}
    costs = dict.fromkeys(tasks, float("inf"))
    try:
        for task in tasks.values():
            task.delay()  # connections and scripts warm
        for _ in range(repeat):  # interleaved, so a busy moment of the machine hits every kind alike
            for name, task in tasks.items():
                begun = time.perf_counter()
                for _ in range(n):
                    task.delay()
                costs[name] = min(costs[name], (time.perf_counter() - begun) / n * 1e6)
        costs.update({f"store {k}": v for k, v in store_costs(app, n, repeat).items()})
    finally:
        app.close()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backend", action="append", help="backend URL (repeatable)")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    backends = args.backend or ["memory://", "redis://127.0.0.1:6379/3"]
    print(f"microseconds per task, best of {args.repeat} runs of {args.n}")
    for backend in backends:
        costs = run_costs(backend, args.n, args.repeat)
        line = ", ".join(f"{name}: {value:.1f}" for name, value in costs.items())
        print(f"{backend}: {line}")


if __name__ == "__main__":
    main()
