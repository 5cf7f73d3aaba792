"""The MongoDB backend: document layout, indexes, conditional updates, bad data and outages.

Runs on mongomock by default (no MongoDB server can be installed on our machines) and, from the same
tests, against a real server when ``COGMAN_TEST_MONGO_URI`` points at one on 127.0.0.1. The contract
shared with the other backends is in tests/integration/test_backend_contract.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import mongomock
import pymongo
import pytest

from cogman import App, Config, Status
from cogman.backends import codec
from cogman.backends.base import TaskQuery
from cogman.backends.mongo.backend import MongoBackend
from cogman.errors import BackendUnavailable, CorruptRecord
from cogman.record import utcnow
from tests.integration.test_backend_contract import MONGO_URI, attempt_of, real_mongo_uri, record

TARGETS = ["mongomock", *(["mongodb"] if MONGO_URI else [])]


@pytest.fixture(params=TARGETS)
def make(request: pytest.FixtureRequest) -> Iterator[Callable[..., MongoBackend]]:
    """``make(**config_options)``: backends on one fresh database of the target, dropped afterwards."""
    database = f"cogman_test_{uuid.uuid4().hex[:8]}"
    url = f"mongomock://{database}" if request.param == "mongomock" else real_mongo_uri()
    made: list[MongoBackend] = []

    def build(**options: Any) -> MongoBackend:
        config = Config(broker_url="memory://", backend_url=url, mongo_database=database, **options)
        backend = MongoBackend(url, config)
        made.append(backend)
        return backend

    yield build
    if made:
        made[0].client.drop_database(database)
    for backend in made:
        backend.close()


def test_indexes_are_created_idempotently_and_never_dropped(make):
    backend = make(mongo_ttl=3600)
    backend.collection.create_index([("owner", 1)], name="someone_elses")
    make(mongo_ttl=3600)  # a second process starting: same indexes, nothing dropped
    indexes = backend.collection.index_information()
    assert indexes["task_id_type"]["key"] == [("task_id", 1)] and indexes["task_id_type"]["unique"]
    assert indexes["TTL"]["key"] == [("created_at", 1)]
    assert indexes["TTL"]["expireAfterSeconds"] == 3600
    newest = [("created_at", -1), ("created_us", -1)]
    assert indexes["status_created"]["key"] == [("status", 1), *newest]
    assert indexes["name_created"]["key"] == [("name", 1), *newest]
    assert indexes["primary_key_created"]["key"] == [("primary_key", 1), *newest]
    assert "someone_elses" in indexes


def test_a_chords_set_is_one_document_of_the_chords_collection_with_a_ttl_index(make):
    backend = make(mongo_ttl=3600, mongo_collection="jobs")
    assert backend.join_chord("c1", 1, 2, '"b"') is None
    assert backend.join_chord("c1", 1, 2, '"again"') is None  # a redelivered member keeps its first outcome
    assert backend.join_chord("c1", 0, 2, '"a"') == ['"a"', '"b"']
    chords = backend.collection.database["jobs_chords"]
    document = chords.find_one({"_id": "c1"})
    assert document["outcomes"] == {"m0": '"a"', "m1": '"b"'}
    assert document["created_at"] is not None
    ttl = chords.index_information()["created_at_ttl"]
    assert ttl["key"] == [("created_at", 1)] and ttl["expireAfterSeconds"] == 3600


def test_without_a_ttl_the_chords_collection_gets_no_ttl_index(make):
    backend = make(mongo_ttl=0)
    backend.join_chord("c2", 0, 1, "1")
    assert "created_at_ttl" not in backend.collection.database[f"{backend.collection.name}_chords"].index_information()


def test_a_different_ttl_never_fails_startup(make):
    make(mongo_ttl=3600)
    make(mongo_ttl=7200)  # updated with collMod on a server; left as it is (with a warning) elsewhere


def test_every_status_change_is_recorded_in_the_document(make):
    backend = make()
    rec = record(primary_key="img-1", retry=1)
    backend.create([rec])
    seen = []
    for status in (Status.QUEUED, Status.IN_PROGRESS, Status.FAILED):
        backend.transition(rec.task_id, status, fail_error="E: x" if status is Status.FAILED else None)
        seen.append(backend.collection.find_one({"task_id": rec.task_id})["status"])
    assert seen == ["queued", "in_progress", "failed"]
    doc = backend.collection.find_one({"task_id": rec.task_id}, {"_id": False})
    assert doc["primary_key"] == "img-1" and doc["fail_error"] == "E: x" and doc["retry"] == 1
    assert doc["created_us"] > 0 and doc["created_at"].year == rec.created_at.year
    assert doc["payload"] == '{"args":[1,[],{"a":null}],"kwargs":{"k":1.25}}'


def test_the_update_filter_holds_the_status_machine(make):
    """Two backends (two processes) writing out of order: the late, lower-ranked write loses."""
    first, second = make(), make()
    rec = record()
    first.create([rec])
    second.transition(rec.task_id, Status.SUCCESS, result={"n": 1}, duration=0.1)
    late = first.transition(rec.task_id, Status.QUEUED)
    assert late is not None and late.status is Status.SUCCESS and late.result == {"n": 1}
    first.transition_many([rec.task_id], Status.IN_PROGRESS)
    assert second.get(rec.task_id).status is Status.SUCCESS  # type: ignore[union-attr]


def test_spawn_retry_is_a_conditional_decrement_and_safe_to_repeat(make):
    backend = make()
    original = record(retry=1)
    backend.create([original])
    attempt = attempt_of(original, 2)
    assert backend.spawn_retry(original.task_id, attempt) == 0
    assert backend.spawn_retry(original.task_id, attempt) == 0  # a retried call: not a second decrement
    assert backend.spawn_retry(original.task_id, attempt_of(original, 3)) is None
    assert backend.collection.count_documents({"original_task_id": original.task_id}) == 2
    assert backend.get(original.task_id).retry == 0  # type: ignore[union-attr]


def test_recreating_a_record_replaces_it(make):
    backend = make()
    rec = record()
    backend.create([rec])
    backend.create([rec, record()])  # a replayed batch: no duplicate-key error, one document per task
    assert backend.collection.count_documents({"task_id": rec.task_id}) == 1
    assert backend.query(TaskQuery()).total == 2


def test_corrupt_and_foreign_documents(make, caplog):
    backend = make()
    good = record()
    backend.create([good])
    backend.collection.insert_one({"task_id": "foreign", "status": "done", "created_at": utcnow()})
    backend.collection.insert_one({**codec.to_document(record()), "task_id": "bad-json", "payload": "{oops"})
    for task_id in ("foreign", "bad-json"):
        with pytest.raises(CorruptRecord) as caught:
            backend.get(task_id)
        assert caught.value.key == f"{backend.where}[task_id={task_id}]"
    page = backend.query(TaskQuery())
    assert [r.task_id for r in page.records] == [good.task_id] and page.total == 3
    assert "query skipped" in caplog.text
    assert backend.transition("bad-json", Status.FAILED) is None and "unreadable record" in caplog.text
    counts = backend.count_by_status(good.created_at, utcnow(), 60)
    assert sum(b.total for b in counts) == 2  # the foreign status is left out (and logged)


def test_an_unreachable_server_never_fails_a_write_and_the_buffer_replays_it(caplog):
    """No server answers on port 1 of 127.0.0.1: writes are parked, reads raise BackendUnavailable."""
    url = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100&connectTimeoutMS=100"
    config = Config(broker_url="memory://", backend_url=url)
    backend = MongoBackend(url, config, retry_seconds=0.2)
    try:
        assert "indexes will be created before the first write" in caplog.text
        rec = record()
        backend.create([rec])
        assert backend.transition(rec.task_id, Status.IN_PROGRESS) is None
        assert backend.buffer.pending == 2 and "buffering writes" in caplog.text
        with pytest.raises(BackendUnavailable, match=r"MongoDB cogman\.tasks unreachable"):
            backend.get(rec.task_id)
        with pytest.raises(BackendUnavailable):
            backend.spawn_retry(rec.task_id, attempt_of(rec, 2))
        # "The server comes back": point the backend at a live (mock) collection and let the buffer drain.
        live = mongomock.MongoClient(tz_aware=True)
        backend.client, backend.collection, backend.early = live, live.cogman.tasks, live.cogman.tasks_early
        assert backend.flush(30)
        stored = backend.get(rec.task_id)
        assert stored is not None and stored.status is Status.IN_PROGRESS
        assert "task_id_type" in backend.collection.index_information()
    finally:
        backend.close()


def test_a_worker_records_every_outcome_in_mongo(make):
    url = f"mongomock://{uuid.uuid4().hex}"
    app = App("mongo-e2e", broker="memory://", backend=url)

    @app.task(name="mongo.div", retry=1)
    def div(a: int, b: int) -> float:
        return a / b

    worker = app.start_background(concurrency=2)
    try:
        ok, bad = div.delay(6, 3), div.delay(1, 0)
        assert ok.get(timeout=30) == 2.0
        with pytest.raises(Exception, match="ZeroDivisionError"):
            bad.get(timeout=30)
        assert app.backend.query(TaskQuery(name="mongo.div")).total == 3  # ok, bad, bad's retry
        assert isinstance(app.backend, MongoBackend)
    finally:
        worker.stop()
        app.close()


def test_pymongo_client_options():
    backend = MongoBackend("mongodb://127.0.0.1:1/", Config(broker_url="memory://"), retry_seconds=0.01)
    try:
        assert isinstance(backend.client, pymongo.MongoClient)
        assert backend.client.options.server_selection_timeout == 2.0 and backend.client.codec_options.tz_aware
    finally:
        backend.close()
