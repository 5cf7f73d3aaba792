"""MongoDB beside a Go Cogman fleet (issue 22), on mongomock.

Go's ``Connect`` drops its ``TTL`` index, then creates ``task_id_type``, ``primary_key_type``,
``task_list_type`` and ``task_filter_type`` in ``cogman.tasks`` and fails when MongoDB refuses one: an
index whose keys exist under another name, or whose name exists with other keys
(cogman-go-behaviour.md, section 6). mongomock does not refuse either, so :func:`go_connect` checks
MongoDB's rule itself before creating each.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from pymongo.errors import OperationFailure

from cogman import Config, Status
from cogman.backends.mongo.backend import MongoBackend
from cogman.gowire.record import GoRecord

#: Go Cogman's indexes on ``cogman.tasks`` (besides TTL, dropped and recreated on every connect).
GO_INDEXES: list[tuple[str, list[tuple[str, int]], dict[str, Any]]] = [
    ("task_id_type", [("task_id", 1)], {"unique": True}),
    ("primary_key_type", [("task_id", 1), ("primary_key", 1)], {"unique": True}),
    ("task_list_type", [("status", 1), ("created_at", -1)], {}),
    ("task_filter_type", [("task_id", 1), ("primary_key", 1), ("status", 1), ("created_at", -1)], {}),
]


def go_connect(collection: Any, ttl_seconds: int = 2_592_000) -> None:
    """What Go Cogman's ``Connect`` does to the collection, with MongoDB's refusals."""
    if "TTL" in collection.index_information():
        collection.drop_index("TTL")
    wanted = [("TTL", [("created_at", 1)], {"expireAfterSeconds": ttl_seconds}), *GO_INDEXES]
    for name, keys, options in wanted:
        for existing, info in collection.index_information().items():
            same_keys = [tuple(k) for k in info["key"]] == keys
            if same_keys and existing != name:
                raise OperationFailure(f"Index already exists with a different name: {existing}", code=85)
            if existing == name and not same_keys:
                raise OperationFailure(f"An existing index has the same name as the requested index: {name}", 86)
        collection.create_index(keys, name=name, **options)


@pytest.fixture
def make() -> Iterator[Any]:
    database = f"cogman_go_{uuid.uuid4().hex[:8]}"
    url = f"mongomock://{database}"
    made: list[MongoBackend] = []

    def build() -> MongoBackend:
        backend = MongoBackend(url, Config(broker_url="memory://", backend_url=url, mongo_database=database))
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close()


def test_go_connects_to_a_database_cogman_indexed_first(make: Any):
    backend = make()  # cogman's defaults: the collection is Go's, cogman.tasks
    go_connect(backend.collection)
    go_connect(backend.collection)  # and again, as every Go process does at start
    names = set(backend.collection.index_information())
    assert {"task_id_type", "TTL"} <= names and "task_id_unique" not in names


def test_cogman_starts_on_a_database_go_indexed_first_and_go_still_connects(make: Any):
    backend = make()
    backend.collection.drop_indexes()
    go_connect(backend.collection)
    make()  # a cogman process starting on Go's indexes
    go_connect(backend.collection)
    keys = [tuple(tuple(k) for k in info["key"]) for info in backend.collection.index_information().values()]
    assert len(keys) == len(set(keys)), "two indexes on the same keys: MongoDB would refuse Go's Connect"


def test_old_index_names_would_break_gos_connect(make: Any):
    """What go_connect checks is what the rename fixes: cogman's former name on task_id fails Go."""
    backend = make()
    backend.collection.drop_indexes()
    backend.collection.create_index([("task_id", pymongo.ASCENDING)], name="task_id_unique", unique=True)
    with pytest.raises(OperationFailure, match="different name"):
        go_connect(backend.collection)


def test_go_records_beside_the_collection_follow_gos_ranks(make: Any):
    backend = make()
    store = backend.go_records()
    record = GoRecord.new("m-1", "gowire.fail", b"x", retry=1)
    assert store.create(record) and not store.create(record)
    assert store.update("m-1", Status.QUEUED).status is Status.QUEUED
    assert store.take_retry("m-1") == 0 and store.take_retry("m-1") is None
    assert store.update("m-1", Status.FAILED, fail_error="asked to fail").fail_error == "asked to fail"
    assert store.update("m-1", Status.SUCCESS).status is Status.FAILED
    assert backend.get("m-1").status is Status.FAILED  # readers see it beside cogman's records
    assert backend.collection.find_one({"task_id": "m-1"}) is None  # Go's own collection is not written


def test_a_go_tasks_starts_are_counted_beside_its_record(make: Any):
    store = make().go_records()
    assert [store.start("go-starts-1", f"d{n}").starts for n in range(3)] == [1, 2, 3]
    assert store.start("go-starts-2", "d0").starts == 1
    assert "TTL" in store.starts.index_information()


def test_listing_on_mongodb_shows_go_tasks_beside_cogmans_the_newest_first(make: Any, monkeypatch: Any):
    from cogman.backends.base import TaskQuery
    from cogman.backends.go_query import list_tasks
    from cogman.gowire import store as go_store

    backend = make()
    for index in range(4):
        record = GoRecord.new(f"list-{index}", "gowire.echo", b"x")
        backend.go_records().create(record.evolve(created_at=f"2026-12-05T10:00:0{index}.5Z"))
    page = list_tasks(backend, TaskQuery(name="gowire.echo"))
    assert ([r.task_id for r in page.records], page.total) == (["list-3", "list-2", "list-1", "list-0"], 4)
    monkeypatch.setattr(go_store, "MAX_LISTED", 2)
    monkeypatch.setattr("cogman.backends.mongo.go_records.MAX_LISTED", 2)
    assert [r.task_id for r in backend.go_records().recent()] == ["list-3", "list-2"]  # bounded: the newest


def go_document(task_id: str, name: str, created_at: Any, status: str = "initiated") -> dict[str, Any]:
    """A document as Go Cogman's client inserts it into ``cogman.tasks`` (section 6 of
    cogman-go-behaviour.md): snake_case fields, the payload binary, BSON dates."""
    return {
        "task_id": task_id, "primary_key": "order-42", "name": name, "original_task_id": task_id,
        "payload": b'{"x":1}', "priority": "High", "status": status, "retry": 0, "fail_error": "",
        "duration": None, "created_at": created_at, "updated_at": created_at,
    }  # fmt: skip


def test_a_task_only_go_wrote_in_the_shared_collection_is_listed_read_and_counted(monkeypatch: Any):
    """cogman's defaults share Go's ``cogman.tasks``: Go's documents are not cogman's records (its own
    query leaves them out), but readers list, count and read them beside cogman's, bounded."""
    from datetime import timedelta

    from cogman import App
    from cogman.backends.base import TaskQuery
    from cogman.backends.go_query import count_tasks, go_names, list_tasks
    from cogman.record import utcnow

    app = App("gomongo", broker="memory://", backend=f"mongomock://gomongo_{uuid.uuid4().hex[:8]}")
    try:
        app.task(name="gowire.echo", wire="go")(lambda payload: None)
        plain = app.task(name="cogman.plain")(lambda x: x)
        backend: Any = app.backend
        assert backend.collection.full_name == "cogman.tasks"
        go_connect(backend.collection)
        now = utcnow()
        backend.collection.insert_one(go_document("go-1", "gowire.echo", now - timedelta(seconds=2)))
        backend.collection.insert_one(go_document("go-2", "gowire.not-this-apps", now - timedelta(seconds=1)))
        mine = plain.delay(1)
        names = go_names(app.tasks)

        own = backend.query(TaskQuery())
        assert ([r.task_id for r in own.records], own.total) == ([mine.id], 1)  # Go's documents are not cogman's
        page = list_tasks(backend, TaskQuery(), names)
        assert ([r.task_id for r in page.records], page.total) == ([mine.id, "go-1"], 2)
        shown = backend.get("go-1")
        assert (shown.status, shown.primary_key, shown.payload["go_payload"]) == (
            Status.INITIATED,
            "order-42",
            "eyJ4IjoxfQ==",
        )
        (bucket,) = count_tasks(backend, now - timedelta(minutes=1), utcnow(), 3600, names)
        assert bucket.counts == {Status.QUEUED: 1, Status.INITIATED: 1}

        monkeypatch.setattr("cogman.gowire.store.MAX_SCANNED", 2)  # the 2 newest: cogman's, then go-2
        assert [r.task_id for r in list_tasks(backend, TaskQuery(), names).records] == [mine.id]
    finally:
        app.close()
