"""memory:// answers as Redis does (issue 19, item 14): the same task, run on the memory backend and on
Redis, gives the same result and the same stored arguments, because the memory backend keeps each
record as Redis's encoding gives it back; and what a read hands out is the caller's own copy."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cogman import App, Status
from tests.integration.redis_helpers import drop_prefix

VALUES: list[Any] = [
    (1, 2),
    {1: "a", "1": "b"},
    {"nested": (1, (2, 3)), "list": [(4,)]},
    [1.0, 2, True, None, "é\u2603"],
    2**70,
    {"zero": -0.0, "tiny": 5e-324, "key\u00e9": ("x",)},
]
IDS = ["tuple", "colliding-keys", "nested-tuples", "mixed", "big-int", "floats"]


@pytest.fixture
def apps(redis_url: str) -> Iterator[dict[str, App]]:
    """The same app twice: on the memory backend and on Redis (memory:// broker and a worker each)."""
    prefix = f"fidelity-{uuid.uuid4().hex[:8]}"
    made = {
        "memory": App("fidelity", broker="memory://", backend="memory://"),
        "redis": App("fidelity", broker="memory://", backend=redis_url, redis_prefix=prefix),
    }
    workers = []
    for app in made.values():

        @app.task(name="fidelity.make")
        def make(index: int, sent: Any) -> Any:
            return VALUES[index]

        workers.append(app.start_background(concurrency=2))
    yield made
    for worker in workers:
        worker.stop()
    for app in made.values():
        app.close()
    drop_prefix(redis_url, prefix)


def outcome(app: App, index: int) -> tuple[str, str]:
    """``repr`` of the result and of the stored arguments: ``(1, 2)`` and ``[1, 2]`` compare equal, their
    reprs do not."""
    result = app.send_task("fidelity.make", (index, VALUES[index]))
    value = result.get(timeout=10)
    return repr(value), repr(result.record().payload["args"])


@pytest.mark.parametrize("index", range(len(VALUES)), ids=IDS)
def test_the_same_values_come_back_the_same_on_memory_and_redis(apps: dict[str, App], index: int):
    on_memory, on_redis = outcome(apps["memory"], index), outcome(apps["redis"], index)
    assert on_memory == on_redis
    as_json = json.loads(json.dumps(VALUES[index]))
    assert on_memory == (repr(as_json), repr([index, as_json]))  # what JSON carries, on both


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_result_changed_by_its_reader_stays_as_stored(apps: dict[str, App], kind: str):
    result = apps[kind].send_task("fidelity.make", (2, None))
    first = result.get(timeout=10)
    first["nested"].append("changed")
    result.record().payload["args"].append("changed")
    assert result.get(timeout=10) == {"nested": [1, [2, 3]], "list": [[4]]}
    assert result.record().payload["args"] == [2, None]


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_value_json_cannot_carry_is_refused_at_the_write(apps: dict[str, App], kind: str):
    app = apps[kind]
    result = app.send_task("fidelity.make", (0, None))
    result.get(timeout=10)
    with pytest.raises(TypeError, match="set"):
        app.backend.transition(result.id, Status.SUCCESS, result={1, 2})
    assert result.get(timeout=10) == [1, 2]
