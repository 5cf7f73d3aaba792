"""Go-format tasks no cogman process touched (a Go client's task run by a Go worker), on the real Redis:
listed by the REST API's ``/list`` and ``cogman list``, counted by ``/daterangecount``, found by a
search of Go's bare keys that is bounded per listing and resumes where the last one stopped (Go keeps
no index in Redis: keys.json of the captured vectors)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis

from cogman import App
from cogman.backends.base import TaskQuery
from cogman.backends.go_query import count_tasks, list_tasks
from cogman.gowire.record import GoRecord, go_time
from cogman.record import utcnow
from cogman.status import Status
from tests.gowire_vectors import load

FAILED = Status.FAILED


@pytest.fixture
def go_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    written: list[str] = []
    client.written = written  # type: ignore[attr-defined]
    yield client
    if written:
        client.delete(*written)
    client.close()


def as_go_wrote_it(go_redis: redis.Redis, name: str, key: str, status: Status = Status.SUCCESS) -> str:
    """A record as Go's server leaves it (records-run.json's final record with a fresh id, name, primary
    key and time), written as Go writes: SET, then EXPIRE."""
    task_id = str(uuid.uuid4())
    record = GoRecord.from_json(load("records-run")["record_final"]["raw"], "captured").evolve(
        task_id=task_id,
        original_task_id=task_id,
        name=name,
        primary_key=key,
        status=status,
        created_at=go_time(),
        updated_at=go_time(),
    )
    go_redis.set(task_id, record.to_json())
    go_redis.expire(task_id, 3600)
    go_redis.written.append(task_id)  # type: ignore[attr-defined]
    return task_id


@pytest.fixture
def app(redis_url: str) -> Iterator[App]:
    application = App("golist", broker="memory://", backend=redis_url, redis_prefix=f"golist-{uuid.uuid4().hex[:8]}")
    application.task(name="gowire.echo", wire="go")(lambda payload: None)
    yield application
    application.close()


def test_a_task_only_go_touched_is_listed_and_counted_beside_cogmans(
    app: App, go_redis: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    import httpx

    from cogman.api import create_app
    from cogman.cli.main import main
    from tests.integration.api_helpers import serving

    key = f"only-go-{uuid.uuid4().hex[:8]}"
    done, failed = as_go_wrote_it(go_redis, "gowire.echo", key), as_go_wrote_it(go_redis, "gowire.echo", key, FAILED)
    other = as_go_wrote_it(go_redis, "gowire.not-this-apps", key)  # Go records carry no app: names decide
    assert app.backend.query(TaskQuery(primary_key=key)).total == 0  # the backend's own query: cogman's records
    start = (utcnow() - timedelta(minutes=5)).isoformat()
    with serving(create_app(app)) as base:
        listed = httpx.get(f"{base}/list", params={"primary_key": key, "limit": 10}, timeout=30)
        failed_only = httpx.get(f"{base}/list", params={"primary_key": key, "status": "failed"}, timeout=30)
        counted = httpx.get(f"{base}/daterangecount", params={"startDate": start, "interval": 60}, timeout=30)
    assert listed.status_code == 200, listed.text
    assert {row["task_id"] for row in listed.json()["data"]} == {done, failed} and listed.json()["meta"]["total"] == 2
    assert other not in {row["task_id"] for row in listed.json()["data"]}
    assert [row["task_id"] for row in failed_only.json()["data"]] == [failed]
    assert counted.status_code == 200, counted.text
    (bucket,) = counted.json()["data"]
    assert bucket["CountSuccess"] >= 1 and bucket["CountFailed"] >= 1  # cogman's own: none under this prefix
    monkeypatch.setenv("COGMAN_REDIS_PREFIX", app.config.redis_prefix)
    assert main(["-A", "tests.integration.gowire_app", "--backend", redis_url, "list", "--primary-key", key]) == 0
    printed = capsys.readouterr().out
    assert done[:8] in printed and failed[:8] in printed and "2 of 2 record(s)" in printed


def test_the_search_for_go_records_visits_a_bounded_number_of_keys_and_resumes(
    app: App, go_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
):
    from cogman.backends.redis import go_records

    monkeypatch.setattr(go_records, "SCAN_COUNT", 10)
    monkeypatch.setattr("cogman.gowire.store.MAX_SCANNED", 20)
    name = f"gowire.many-{uuid.uuid4().hex[:8]}"
    mine = {as_go_wrote_it(go_redis, name, "") for _ in range(60)}
    not_go = [str(uuid.uuid4()) for _ in range(2)]
    go_redis.set(not_go[0], "not a Go record", ex=3600)
    go_redis.hset(not_go[1], "TaskID", not_go[1])
    go_redis.expire(not_go[1], 3600)
    go_redis.written.extend(not_go)  # type: ignore[attr-defined]
    store: Any = app.backend.go_records()
    calls: list[int] = []
    scan = store.link.client.scan

    def counted_scan(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return scan(*args, **kwargs)

    monkeypatch.setattr(store.link.client, "scan", counted_scan)
    steps = 0
    while not mine <= {r.task_id for r in store.recent(frozenset({name}))}:  # each listing searches one more step
        steps += 1
        assert steps <= go_redis.dbsize() // 10 + 10, "the search never reached every Go record"
    assert len(calls) <= 2 * (steps + 1)  # at most MAX_SCANNED / SCAN_COUNT calls per listing
    assert go_redis.get(f"{app.config.redis_prefix}:go-scan") is not None  # where the next one resumes
    listed = {r.task_id for r in store.recent(frozenset({name}))}
    assert not listed & set(not_go)  # a bare UUID key holding anything else is not listed
    assert list_tasks(app.backend, TaskQuery(name=name, limit=0), {name}).total == 60
    assert list_tasks(app.backend, TaskQuery(name=name, limit=0)).total == 60  # listed now, whatever the names
    now = utcnow()
    buckets = count_tasks(app.backend, now - timedelta(hours=1), now, 7200, {name})
    assert sum(b.counts.get(Status.SUCCESS, 0) for b in buckets) == 60
