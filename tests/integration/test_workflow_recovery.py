"""Issue 19 items 3 and 4 on the real RabbitMQ and Redis: what a lost ``create_new`` reply used to strand,
and a manual retry of a failed workflow step resuming its workflow.

A lost reply is made by a TCP proxy in front of Redis (tests/integration/tcp_proxy.py): the claim's script
reaches Redis and runs, the proxy holds its reply back, and once the record is there every connection
is reset, so the create is retried and finds the record: "exists", though this caller made it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import redis

from cogman import App, Signature, Status, StepFailed, chain, chord
from cogman.admin.actions import NeverRan, retry_task
from cogman.errors import BackendUnavailable
from cogman.priority import Priority
from cogman.record import TaskRecord, utcnow
from cogman.scheduling.beat import Beat
from cogman.scheduling.claims import CLAIMANT
from cogman.scheduling.periodic import Schedule
from cogman.sending.client import new_record
from cogman.signature import NOT_RUN, callback_id
from tests.integration.rabbit_helpers import depth, wait_for
from tests.integration.redis_helpers import drop_prefix
from tests.integration.tcp_proxy import TcpProxy


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"recovery-{uuid.uuid4().hex[:8]}"
    yield name
    drop_prefix(redis_url, name)


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(6379)
    proxy.start()
    yield proxy
    proxy.release_replies()
    proxy.kill()


@pytest.fixture
def apps() -> Iterator[list[App]]:
    made: list[App] = []
    yield made
    for app in reversed(made):
        for worker in list(app.running_workers):
            worker.stop()
        app.close()


class Runs:
    """What the tasks of :func:`register` did, by task name: the arguments of each run."""

    def __init__(self) -> None:
        self.calls: dict[str, list[Any]] = {}
        self.fixed = threading.Event()
        self._lock = threading.Lock()

    def note(self, name: str, value: Any) -> None:
        with self._lock:
            self.calls.setdefault(name, []).append(value)

    def of(self, name: str) -> list[Any]:
        with self._lock:
            return list(self.calls.get(name, []))


def register(app: App) -> Runs:
    runs = Runs()

    @app.task(name="rec.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="rec.flaky")
    def flaky(x: int) -> int:
        """Fails until the test fixes it (an operator fixed the cause), then adds one."""
        runs.note("flaky", x)
        if not runs.fixed.is_set():
            raise ValueError(f"not yet: {x}")
        return x + 1

    @app.task(name="rec.mul")
    def mul(x: int, y: int) -> int:
        runs.note("mul", (x, y))
        return x * y

    @app.task(name="rec.total")
    def total(values: list[int]) -> int:
        runs.note("total", values)
        return sum(values)

    @app.task(name="rec.tick")
    def tick() -> None:
        runs.note("tick", None)

    return runs


def s(app: App, name: str, *args: object) -> Signature:
    return Signature(f"rec.{name}", args, app=app)


def lose_the_reply(app: App, proxy: TcpProxy, redis_url: str, task_id: str) -> list[object]:
    """Make ``app``'s first ``create_new`` of ``task_id`` lose its reply after Redis ran it. Returns what
    that call gave its caller (False, or the exception), once it has."""
    backend: Any = app.backend
    real: Callable[[TaskRecord], bool] = backend.create_new
    direct = redis.Redis.from_url(redis_url)
    outcome: list[object] = []
    # Redis must know the script already: a NOSCRIPT reply held back would mean it never ran.
    assert real(new_record("rec.add", (0, 0), {}, priority=Priority.HIGH, retry=0, primary_key=None))

    def cut_once_stored() -> None:
        wait_for(lambda: direct.exists(backend.key(task_id)), 30, f"the create of {task_id} to run in Redis")
        proxy.kill()  # the held reply dies with the connection
        proxy.release_replies()
        proxy.start()

    def lossy(record: TaskRecord) -> bool:
        if record.task_id != task_id or outcome:
            return real(record)
        proxy.hold_replies()
        cutter = threading.Thread(target=cut_once_stored, daemon=True)
        cutter.start()
        try:
            created = real(record)
        except Exception as exc:
            outcome.append(exc)
            raise
        finally:
            cutter.join(60)
        outcome.append(created)
        return created

    backend.create_new = lossy
    return outcome


def test_a_chord_callback_whose_claim_lost_its_reply_is_sent_at_once_and_runs_once(
    rabbit: str, redis_url: str, prefix: str, redis_proxy: TcpProxy, apps: list[App]
):
    """Without re-enqueue, the callback used to wait forever: the member's retried create said "exists"."""
    db = redis_url.rsplit("/", 1)[-1]
    worker_app = App("recovery", broker=rabbit, backend=f"redis://127.0.0.1:{redis_proxy.port}/{db}",
                     redis_prefix=prefix, re_enqueue=False)  # fmt: skip
    client = App("recovery-client", broker=rabbit, backend=redis_url, redis_prefix=prefix)
    apps += [worker_app, client]
    runs = register(worker_app)
    chord_id = str(uuid.uuid4())
    outcome = lose_the_reply(worker_app, redis_proxy, redis_url, callback_id(chord_id))
    worker_app.start_background(concurrency=2)
    result = chord([s(client, "add", i, i) for i in range(3)], s(client, "total")).apply_async(task_id=chord_id)
    assert result.get(timeout=60) == 6
    assert outcome and outcome[0] is not True  # the reply really was lost: the create said "exists" or raised
    assert runs.of("total") == [[0, 2, 4]]
    record = client.backend.get(result.id)
    assert record is not None and record.status is Status.SUCCESS
    assert ":member " in record.payload[CLAIMANT]  # claimed by this process for one member


def test_a_periodic_tick_whose_claim_lost_its_reply_is_sent_by_its_beat_once(
    rabbit: str, redis_url: str, prefix: str, redis_proxy: TcpProxy, apps: list[App]
):
    db = redis_url.rsplit("/", 1)[-1]
    beat_app = App("recovery-beat", broker=rabbit, backend=f"redis://127.0.0.1:{redis_proxy.port}/{db}",
                   redis_prefix=prefix, re_enqueue=False)  # fmt: skip
    client = App("recovery-client", broker=rabbit, backend=redis_url, redis_prefix=prefix)
    apps += [beat_app, client]
    schedule: Schedule = beat_app.add_periodic("rec.tick", every=timedelta(seconds=1), name="each-second")
    start = utcnow().replace(microsecond=500_000)
    clock = [start]
    beat = Beat(beat_app, clock=lambda: clock[0])
    assert beat.run_pending() == []  # its first look: the schedule never ran, nothing to catch up
    clock[0] = start + timedelta(seconds=1)
    [tick] = schedule.ticks(clock[0], start, 1)
    tick_id = schedule.tick_id(tick)
    outcome = lose_the_reply(beat_app, redis_proxy, redis_url, tick_id)
    assert beat.run_pending() == [tick_id]
    assert outcome and outcome[0] is not True
    assert client.result(tick_id).wait_sent(30)
    assert beat.run_pending() == []  # the same moment again: nothing more
    assert depth(rabbit, "high_priority_queue_0") == 1
    record = client.backend.get(tick_id)
    assert record is not None and record.payload[CLAIMANT] == beat.claimant


@pytest.mark.parametrize("kind", ["memory", "redis", "mongomock"])
def test_a_claim_whose_create_ran_but_raised_is_sent_by_the_next_pass_on_every_backend(
    kind: str, redis_url: str, prefix: str, apps: list[App], caplog: pytest.LogCaptureFixture
):
    """The create ran, then the call raised (the reply lost, the retries spent: BackendUnavailable). The
    beat's next pass tries the tick again, finds its own claim unconfirmed, and sends it, once."""
    backend = {"memory": "memory://", "redis": redis_url, "mongomock": f"mongomock://{prefix}"}[kind]
    app = App("recovery-claims", broker="memory://", backend=backend, redis_prefix=prefix, re_enqueue=False)
    apps.append(app)
    schedule = app.add_periodic("rec.tick", every=timedelta(seconds=1), name="each-second")
    start = utcnow().replace(microsecond=500_000)
    clock = [start]
    beat = Beat(app, clock=lambda: clock[0])
    beat.run_pending()
    clock[0] = start + timedelta(seconds=1)
    [tick] = schedule.ticks(clock[0], start, 1)
    real = app.backend.create_new
    published: list[str] = []
    real_publish = app.broker.publish

    def create_then_raise(record: TaskRecord) -> bool:
        app.backend.create_new = real  # type: ignore[method-assign]
        assert real(record)
        raise BackendUnavailable("reply lost: unreachable while trying to create the tick if new")

    def counting(messages: Any, *args: Any, **kwargs: Any) -> Any:
        published.extend(m.task_id for m in messages)
        return real_publish(messages, *args, **kwargs)

    app.backend.create_new = create_then_raise  # type: ignore[method-assign]
    app.broker.publish = counting  # type: ignore[method-assign]
    assert beat.run_pending() == []  # the pass raised: logged, its ticks looked at again next pass
    assert "reply lost" in caplog.text and published == []
    assert beat.run_pending() == [schedule.tick_id(tick)]
    assert beat.run_pending() == [] and published == [schedule.tick_id(tick)]
    other = Beat(app, clock=lambda: clock[0])  # another beat finds the tick claimed, not by itself
    other._considered[schedule.name] = start
    assert other.run_pending() == [] and published == [schedule.tick_id(tick)]


# Manual retries of failed workflow steps


@pytest.fixture
def flow(rabbit: str, redis_url: str, prefix: str, apps: list[App]) -> tuple[App, Runs]:
    app = App("recovery-flow", broker=rabbit, backend=redis_url, redis_prefix=prefix)
    apps.append(app)
    runs = register(app)
    app.start_background(concurrency=2)
    return app, runs


def test_a_manual_retry_of_a_failed_chain_step_resumes_the_chain_once(flow: tuple[App, Runs]):
    app, runs = flow
    result = chain(s(app, "add", 1, 2), s(app, "flaky"), s(app, "mul", 10)).delay()
    with pytest.raises(StepFailed, match=r"chain step 2 of 3 \(rec.flaky\)"):
        result.get(timeout=60)
    last = app.backend.get(result.id)
    assert last is not None and (last.fail_error or "").startswith(NOT_RUN)
    runs.fixed.set()  # the operator fixed the cause, then retries the step (`/retry`, the dashboard, the CLI)
    retry_task(app, result.ids[1])
    assert result.get(timeout=60) == 40  # (1 + 2 + 1) * 10: the chain went on from the retried step
    assert runs.of("flaky") == [3, 3] and runs.of("mul") == [(4, 10)]
    assert app.backend.get(result.id).status is Status.SUCCESS  # type: ignore[union-attr]


def test_a_manual_retry_of_a_failed_chord_member_sends_the_callback_once_with_every_result(
    flow: tuple[App, Runs],
):
    app, runs = flow
    result = chord([s(app, "add", 1, 1), s(app, "flaky", 2), s(app, "add", 3, 3)], s(app, "total")).delay()
    with pytest.raises(StepFailed, match=r"chord member 2 of 3 \(rec.flaky\)"):
        result.get(timeout=60)
    runs.fixed.set()
    retry_task(app, result.group[1].id)
    assert result.get(timeout=60) == 11
    assert runs.of("total") == [[2, 3, 6]]
    assert result.group.get(timeout=10) == [2, 3, 6]


def test_a_not_run_record_written_after_the_retry_is_replaced_by_the_worker(
    rabbit: str, redis_url: str, prefix: str, apps: list[App]
):
    """The step's failure may record "not run" after the operator's retry deleted what it found (a retry
    sent within milliseconds of the failure): the worker then replaces the stale record itself."""
    app = App("recovery-race", broker=rabbit, backend=redis_url, redis_prefix=prefix)
    apps.append(app)
    runs = register(app)
    worker = app.start_background(concurrency=2)
    result = chain(s(app, "add", 1, 2), s(app, "flaky"), s(app, "mul", 10)).delay()
    with pytest.raises(StepFailed):
        result.get(timeout=60)
    stale = app.backend.get(result.id)
    assert stale is not None
    worker.stop()
    runs.fixed.set()
    retry_task(app, result.ids[1])
    assert app.backend.get(result.id) is None  # the retry deleted it
    app.backend.create([stale])  # ...and the failure's late write brings it back
    app.start_background(concurrency=2)
    wait_for(lambda: runs.of("mul"), 60, "the last step to run")  # the handle reads the stale record till then
    assert result.get(timeout=60) == 40
    assert runs.of("mul") == [(4, 10)]


def test_a_step_that_never_ran_is_refused_a_manual_retry_naming_the_step_to_retry(flow: tuple[App, Runs]):
    app, runs = flow
    result = chain(s(app, "add", 1, 2), s(app, "flaky"), s(app, "mul", 10)).delay()
    with pytest.raises(StepFailed):
        result.get(timeout=60)
    for force in (False, True):
        with pytest.raises(NeverRan, match=r"never ran \(not run: step 2 \(rec.flaky\) failed: ValueError: not "
                                           r"yet: 3\); retry the step that failed instead"):  # fmt: skip
            retry_task(app, result.id, force=force)
    assert runs.of("mul") == []


def test_the_api_retry_resumes_a_chain_and_refuses_a_step_that_never_ran(flow: tuple[App, Runs]):
    from cogman.api import create_app
    from tests.integration.api_helpers import serving

    app, runs = flow
    result = chain(s(app, "add", 1, 2), s(app, "flaky"), s(app, "mul", 10)).delay()
    with pytest.raises(StepFailed):
        result.get(timeout=60)
    runs.fixed.set()
    with serving(create_app(app)) as base, httpx.Client(base_url=base, timeout=30) as http:
        refused = http.post("/retry", json={"task_id": result.id, "force": True})
        assert refused.status_code == 409 and "retry the step that failed instead" in refused.text
        assert http.post("/retry", json={"task_id": result.ids[1]}).status_code == 200
    assert result.get(timeout=60) == 40
    assert runs.of("mul") == [(4, 10)]


def test_manual_retries_resume_workflows_on_the_embedded_memory_transport_too(apps: list[App]):
    app = App("recovery-memory", broker="memory://", backend="memory://")
    apps.append(app)
    runs = register(app)
    app.start_background(concurrency=2)
    chained = chain(s(app, "add", 1, 2), s(app, "flaky"), s(app, "mul", 10)).delay()
    chorded = chord([s(app, "add", 1, 1), s(app, "flaky", 2), s(app, "add", 3, 3)], s(app, "total")).delay()
    for result in (chained, chorded):
        with pytest.raises(StepFailed):
            result.get(timeout=30)
    runs.fixed.set()
    retry_task(app, chained.ids[1])
    retry_task(app, chorded.group[1].id)
    assert (chained.get(timeout=30), chorded.get(timeout=30)) == (40, 11)
    assert runs.of("mul") == [(4, 10)] and runs.of("total") == [[2, 3, 6]]
