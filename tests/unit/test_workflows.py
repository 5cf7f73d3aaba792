"""Workflows without a broker server: signatures and their checks, the spec on the wire (a malformed one is
poison), and chain / group / chord on the embedded memory:// transport with a worker in the process,
including the redelivery of a finished step (its worker died before sending what follows)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from cogman import App, Signature, Status, StepFailed, chain, chord, group
from cogman.backends.base import TaskQuery
from cogman.errors import PoisonMessage
from cogman.message import Message
from cogman.priority import Priority
from cogman.signature import ChainStep, ChordMember, callback_id, chain_ids, next_step_id

HEADERS = {"TaskID": "t-1", "TaskName": "w.add"}


@pytest.fixture
def flow() -> Iterator[App]:
    """An embedded app with the workflow tasks and a worker of 4 threads."""
    app = App("flow", broker="memory://", backend="memory://")
    runs: dict[str, int] = {}
    lock = threading.Lock()

    @app.task(name="w.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="w.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(name="w.tsum")
    def tsum(values: list[int | None]) -> int:
        with lock:
            runs["tsum"] = runs.get("tsum", 0) + 1
        return sum(v for v in values if v is not None)

    @app.task(name="w.keep")
    def keep(values: list[int | None]) -> list[int | None]:
        return values

    @app.task(name="w.boom", retry=1)
    def boom(x: int) -> int:
        raise ValueError(f"boom {x}")

    app.runs = runs  # type: ignore[attr-defined]
    worker = app.start_background(concurrency=4)
    yield app
    worker.stop()
    app.close()


def tasks(app: App, *names: str) -> list:
    return [app.tasks[f"w.{name}"] for name in names]


# Signatures


def test_a_signature_is_json_and_comes_back_the_same(flow: App):
    (add,) = tasks(flow, "add")
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    signature = add.s(1, y=2).set(priority="low", retry=2, countdown=1.5, eta=eta, primary_key="k")
    data = json.loads(json.dumps(signature.to_dict()))
    again = Signature.from_dict(data)
    assert again == Signature("w.add", (1,), {"y": 2}, signature.options)
    assert again.send_options() == {"priority": "low", "retry": 2, "countdown": 1.5, "eta": eta, "primary_key": "k"}


def test_signatures_are_checked_where_they_are_built(flow: App):
    (add,) = tasks(flow, "add")
    with pytest.raises(TypeError, match=r"arguments do not fit w\.add: too many positional"):
        add.s(1, 2, 3)
    with pytest.raises(TypeError, match="unexpected keyword"):
        add.s(z=1)
    with pytest.raises(TypeError, match=r"argument 0 of w\.add is not JSON-serialisable"):
        add.s(object())
    with pytest.raises(TypeError, match=r"unknown option.*colour"):
        add.s(1).set(colour="red")
    with pytest.raises(ValueError, match="priority"):
        add.s(1).set(priority="urgent")
    with pytest.raises(ValueError, match=r"retry of w\.add must be a non-negative integer"):
        add.s(1).set(retry=-1)


def test_a_workflow_is_checked_whole_before_anything_is_sent(flow: App):
    add, tsum = tasks(flow, "add", "tsum")
    with pytest.raises(TypeError, match=r"chain step 2 of 2 \(w.add\) \(which also receives the previous result"):
        chain(add.s(1, 2), add.s(3, 4)).delay()
    with pytest.raises(TypeError, match=r"chord callback \(w.tsum\)"):
        chord([add.s(1, 2)], tsum.s(5)).delay()
    with pytest.raises(TypeError, match=r"group member 2 of 2 \(w.add\)"):
        group(add.s(1, 2), add.s(1)).delay()
    with pytest.raises(TypeError, match="chain steps are signatures"):
        chain(add.s(1, 2), group(add.s(1, 2)))
    assert flow.backend.query(TaskQuery()).total == 0


# The spec on the wire


def test_a_workflow_travels_in_the_message_and_in_the_record(flow: App):
    (add,) = tasks(flow, "add")
    spec = ChainStep(1, 3, (add.s(10), add.s(20).set(priority="low")))
    message = Message("t-1", "w.add", "t-1", Priority.HIGH, (1, 2), {}, workflow=spec)
    decoded = Message.decode(message.encode(), HEADERS)
    assert decoded.workflow == spec
    plain = Message("t-1", "w.add", "t-1", Priority.HIGH, (1, 2))
    assert "workflow" not in json.loads(plain.encode()) and Message.decode(plain.encode(), HEADERS).workflow is None
    member = ChordMember("c-1", 2, 5, add.s(1), partial=True)
    assert (
        Message.decode(Message("t-1", "w.add", "t-1", Priority.HIGH, workflow=member).encode(), HEADERS).workflow
        == member
    )


@pytest.mark.parametrize(
    ("workflow", "reason"),
    [
        ([1], "one key, 'chain' or 'chord'"),
        ({"loop": {}}, "unknown workflow kind 'loop'"),
        ({"chain": {"position": 1, "total": 3, "rest": [{"task": "a"}]}}, "'rest' must list the 2 step"),
        (
            {"chain": {"position": 0, "total": 2, "rest": [{"task": "a"}]}},
            "'position' must be an integer of at least 1",
        ),
        ({"chain": {"position": 1, "total": 2, "rest": [{"args": []}]}}, "needs a task name"),
        ({"chord": {"id": "c", "index": 3, "size": 3, "callback": {"task": "a"}}}, "'index' below 'size'"),
        (
            {"chord": {"id": "c", "index": 0, "size": 3, "callback": {"task": "a", "options": {"x": 1}}}},
            "unknown option",
        ),
    ],
)
def test_a_malformed_workflow_is_a_poison_message(workflow: object, reason: str):
    body = json.dumps({"task_id": "t-1", "name": "w.add", "args": [], "workflow": workflow}).encode()
    with pytest.raises(PoisonMessage, match="malformed workflow: .*" + reason.replace("(", r"\(")) as raised:
        Message.decode(body, HEADERS)
    assert raised.value.task_id == "t-1"


def test_ids_derive_from_the_step_and_the_chord():
    ids = chain_ids("first", 3)
    assert ids == ["first", next_step_id("first"), next_step_id(next_step_id("first"))] and len(set(ids)) == 3
    assert callback_id("c-1") == callback_id("c-1") != callback_id("c-2")


# Running them (memory://, a worker in the process)


def test_chain_group_and_chord_give_the_issue_examples(flow: App):
    add, mul, tsum = tasks(flow, "add", "mul", "tsum")
    assert chain(add.s(1, 2), add.s(10), mul.s(3)).delay().get(timeout=10) == 39
    assert (add.s(1, 2) | add.s(10) | mul.s(3)).delay().get(timeout=10) == 39
    assert group(add.s(i, i) for i in range(100)).delay().get(timeout=10) == [2 * i for i in range(100)]
    assert chord(group(add.s(i, i) for i in range(100)), tsum.s()).delay().get(timeout=10) == 9900
    assert flow.runs["tsum"] == 1  # type: ignore[attr-defined]


def test_a_failing_step_stops_the_chain_and_later_steps_are_recorded_not_run(flow: App):
    add, boom, mul = tasks(flow, "add", "boom", "mul")
    result = chain(add.s(1, 2), boom.s(), mul.s(3), add.s(1)).delay()
    with pytest.raises(StepFailed) as raised:
        result.get(timeout=10)
    failed = raised.value
    assert failed.step == "chain step 2 of 4 (w.boom)" and failed.error == "ValueError: boom 3"
    assert failed.attempts == 2 and "ValueError: boom 3" in (failed.traceback or "")  # retry=1: two attempts
    assert str(failed).startswith("chain step 2 of 4 (w.boom) failed after 2 attempts")
    third, fourth = (step.record() for step in result.steps[2:])
    for record in (third, fourth):
        assert record.status is Status.FAILED
        assert record.fail_error == "not run: step 2 (w.boom) failed: ValueError: boom 3"
    assert third.name == "w.mul" and third.args == [3] and fourth.name == "w.add"


def test_a_failed_member_fails_the_chord_and_the_callback_is_recorded_not_run(flow: App):
    add, boom, tsum = tasks(flow, "add", "boom", "tsum")
    result = chord([add.s(1, 1), boom.s(2), add.s(3, 3)], tsum.s()).delay()
    with pytest.raises(StepFailed, match=r"chord member 2 of 3 \(w.boom\) failed after 2 attempts") as raised:
        result.get(timeout=10)
    assert raised.value.error == "ValueError: boom 2"
    callback = flow.backend.get(result.id)
    assert callback is not None and callback.status is Status.FAILED
    assert callback.fail_error == "not run: chord member 2 of 3 (w.boom) failed: ValueError: boom 2"
    assert "tsum" not in flow.runs  # type: ignore[attr-defined]


def test_a_partial_chord_gets_none_for_failed_members(flow: App):
    add, boom, keep = tasks(flow, "add", "boom", "keep")
    assert chord([add.s(1, 1), boom.s(2), add.s(3, 3)], keep.s(), partial=True).delay().get(timeout=10) == [2, None, 6]


def test_an_empty_chord_calls_back_with_an_empty_list_and_an_empty_group_is_empty(flow: App):
    (keep,) = tasks(flow, "keep")
    assert chord([], keep.s()).delay().get(timeout=10) == []
    assert group().apply_async(app=flow).get(timeout=10) == []


def test_a_chain_step_whose_input_does_not_fit_is_recorded_not_sent(flow: App):
    """The previous result cannot be sent (not JSON-serialisable is impossible: results are JSON; too
    large is not): here the step's handler takes a list, the first step returns an int."""
    add, tsum = tasks(flow, "add", "tsum")
    result = chain(add.s(1, 2), tsum.s(), add.s(1)).delay()  # tsum(3) runs and fails: int is not iterable
    with pytest.raises(StepFailed, match=r"chain step 2 of 3 \(w.tsum\)"):
        result.get(timeout=10)


def test_a_workflow_runs_eagerly_too():
    app = App("eager-flow", broker="memory://", backend="memory://", eager=True)

    @app.task(name="e.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="e.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    try:
        assert chain(add.s(1, 2), add.s(10)).delay().get(timeout=5) == 13
        assert chord(group(add.s(i, i) for i in range(10)), tsum.s()).delay().get(timeout=5) == 90
    finally:
        app.close()


def test_a_redelivered_finished_step_sends_what_follows_once(flow: App):
    """The worker that ran step 1 recorded its success and died before sending step 2: the redelivery
    finds the step final, does not run it, and sends step 2; a second redelivery sends nothing new."""
    (mul,) = tasks(flow, "mul")
    ids = chain_ids("dead-step", 2)
    step = flow.new_records("w.add", [((1, 2), {})], task_ids=[ids[0]],
                            extras=[{"workflow": ChainStep(1, 2, (mul.s(10),)).to_dict()}])[0]  # fmt: skip
    flow.backend.create([step])
    flow.backend.transition(step.task_id, Status.SUCCESS, result=3)
    message = Message.for_record(step, retries_left=0)
    flow.broker.publish([message])
    wait_created(flow, ids[1])
    assert flow.result(ids[1]).get(timeout=10) == 30
    flow.broker.publish([message])
    flow.join(timeout=10)
    assert flow.backend.query(TaskQuery(name="w.mul")).total == 1
    assert flow.backend.get(ids[1]).history[-1][0] is Status.SUCCESS  # type: ignore[union-attr]


def test_a_redelivered_chord_member_joins_once(flow: App):
    """Members joining twice (redelivered) count once; the callback is created once, by one join."""
    (tsum,) = tasks(flow, "tsum")
    size = 3
    records = [
        flow.new_records(
            "w.add", [((i, i), {})], extras=[{"workflow": ChordMember("ch", i, size, tsum.s()).to_dict()}]
        )[0]
        for i in range(size)
    ]
    messages = [Message.for_record(r, retries_left=0) for r in records]
    flow.backend.create(records)
    flow.broker.publish(messages + messages[:2])  # members 0 and 1 delivered twice
    wait_created(flow, callback_id("ch"))
    assert flow.result(callback_id("ch")).get(timeout=10) == 6
    flow.broker.publish(messages)  # all of them again, after the callback ran
    flow.join(timeout=10)
    assert flow.runs["tsum"] == 1  # type: ignore[attr-defined]


def test_an_expired_chord_member_fails_the_chord_instead_of_leaving_it_waiting(flow: App):
    """A member past its ``expires`` never runs; it still joins the chord as failed, so the callback is
    recorded not run (before, it was never created and the chord's get() waited forever)."""
    (tsum,) = tasks(flow, "tsum")
    records = [
        flow.new_records("w.add", [((i, i), {})], extras=[{"workflow": ChordMember("late", i, 2, tsum.s()).to_dict()}])[
            0
        ]
        for i in range(2)
    ]
    records[1] = records[1].evolve(expires=datetime(2020, 1, 1, tzinfo=UTC))
    flow.backend.create(records)
    flow.broker.publish([Message.for_record(r, retries_left=0) for r in records])
    wait_created(flow, callback_id("late"))
    flow.join(timeout=10)
    callback = flow.backend.get(callback_id("late"))
    assert callback is not None and callback.status is Status.FAILED
    assert "not run: chord member 2 of 2" in str(callback.fail_error) and "expired" in str(callback.fail_error)
    assert "tsum" not in flow.runs  # type: ignore[attr-defined]


def wait_created(app: App, task_id: str) -> None:
    app.backend.wait(task_id, 10)
    assert app.backend.get(task_id) is not None, f"task {task_id} never recorded"


def test_a_workflow_by_name_keeps_its_spec_in_the_first_steps_record():
    """A client without the functions names the tasks (only JSON is checked); the first step's record
    carries the rest of the chain, so re-enqueue republishes the step with its workflow."""
    app = App("client-only", broker="memory://", backend="memory://")
    try:
        result = chain(Signature("remote.a", (1,), app=app), Signature("remote.b", (2,))).delay()
        first = app.backend.get(result.ids[0])
        assert (
            first is not None and first.payload["workflow"] == ChainStep(1, 2, (Signature("remote.b", (2,)),)).to_dict()
        )
        assert Message.for_record(first, retries_left=0).workflow == ChainStep(1, 2, (Signature("remote.b", (2,)),))
    finally:
        app.close()


# Delayed steps: countdown travels with the signature and is sent with it.


def started_after(app: App, earlier: str, later: str) -> float:
    """Seconds between ``earlier`` finishing and ``later`` starting, from the records' histories."""
    first, second = app.backend.get(earlier), app.backend.get(later)
    assert first is not None and second is not None
    finished = dict(first.history)[Status.SUCCESS]
    return (dict(second.history)[Status.IN_PROGRESS] - finished).total_seconds()


def test_a_chain_step_with_a_countdown_starts_no_earlier(flow: App):
    (add,) = tasks(flow, "add")
    result = chain(add.s(1, 2), add.s(10).set(countdown=0.5)).delay()
    assert result.get(timeout=10) == 13
    assert started_after(flow, result.ids[0], result.ids[1]) >= 0.5


def test_a_chord_callback_with_a_countdown_starts_no_earlier(flow: App):
    add, tsum = tasks(flow, "add", "tsum")
    result = chord([add.s(1, 1)], tsum.s().set(countdown=0.5)).delay()
    assert result.get(timeout=10) == 2
    assert started_after(flow, result.group[0].id, result.id) >= 0.5


def test_group_members_with_a_countdown_are_sent_delayed(flow: App):
    (add,) = tasks(flow, "add")
    result = group(add.s(1, 1).set(countdown=0.5), add.s(2, 2)).delay()
    assert result.get(timeout=10) == [2, 4]
    record = result[0].record()
    assert record.eta is not None and (record.eta - record.created_at).total_seconds() >= 0.45  # taken apart
    assert dict(record.history)[Status.IN_PROGRESS] >= record.eta
