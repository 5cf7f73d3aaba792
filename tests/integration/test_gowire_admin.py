"""Operator actions on Go-format tasks (issue 22) on the real RabbitMQ and Redis: ``POST /retry`` and
``cogman retry`` republish a Go task as Go's REST ``/retry`` does (records-retry.json, ``rest_retry``:
the records it leaves and the message it publishes), and ``AsyncResult.forget`` deletes Go records."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cogman import App
from cogman.admin.actions import retry_task
from cogman.errors import BrokerUnavailable
from cogman.gowire.record import GoRecord, go_retry_id
from cogman.status import Status
from tests.gowire_vectors import load, shape
from tests.integration.test_gowire import amqp_channel

REST_RETRY = load("records-retry")["rest_retry"]


@pytest.fixture
def go_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def app(rabbit: str, redis_url: str) -> Iterator[App]:
    application = App("goadmin", broker=rabbit, backend=redis_url, send_mode="confirmed")
    yield application
    application.close()


def as_go_left_it(go_redis: redis.Redis, raw: str, **changes: Any) -> GoRecord:
    """A captured record under a fresh id, written as Go writes (SET, then EXPIRE)."""
    task_id = str(uuid.uuid4())
    record = GoRecord.from_json(raw, "captured").evolve(task_id=task_id, original_task_id=task_id, **changes)
    go_redis.set(task_id, record.to_json())
    go_redis.expire(task_id, 3600)
    return record


def taken_off(rabbit: str, queue: str) -> Any:
    connection = amqp_channel(rabbit)
    try:
        return connection.channel().basic_get(queue, no_ack=True)
    finally:
        connection.close()


def test_post_retry_of_a_go_task_leaves_the_records_and_message_gos_rest_retry_did(
    app: App, rabbit: str, go_redis: redis.Redis
):
    import httpx

    from cogman.api import create_app
    from tests.integration.api_helpers import serving

    # The original as Go's /retry found it: in_progress (Go's race), Retry 0. cogman refuses unless forced.
    original = as_go_left_it(go_redis, REST_RETRY["original_before"]["raw"])
    with serving(create_app(app)) as base:
        refused = httpx.post(f"{base}/retry", json={"task_id": original.task_id}, timeout=30)
        answer = httpx.post(f"{base}/retry", json={"task_id": original.task_id, "force": True}, timeout=30)
    assert refused.status_code == 409 and "in_progress" in refused.text
    assert answer.status_code == 200, answer.text
    attempt_id = answer.json()["data"]["task_id"]
    assert attempt_id == go_retry_id(original.task_id)  # derived, so readers follow it

    # The records: the original's Retry 0 + 1 - 1 (Go's net effect), the new attempt as Go made it.
    expected = {record["key"]: record["raw"] for record in REST_RETRY["records_after"].values()}
    expected_original = expected.pop(REST_RETRY["original_before"]["key"])
    (expected_attempt,) = expected.values()
    assert shape(go_redis.get(original.task_id)) == shape(expected_original)
    stored = go_redis.get(attempt_id)
    assert shape(stored) == shape(expected_attempt) and list(json.loads(stored)) == list(json.loads(expected_attempt))
    assert json.loads(stored)["OriginalTaskID"] == original.task_id

    # The message, as Go's /retry published it: the raw body, the two headers, nothing else.
    captured = REST_RETRY["message"]
    got = taken_off(rabbit, captured["queue"])
    assert got is not None and got.body == base64.b64decode(captured["body_base64"])
    properties = dict(got.properties)
    headers = properties.pop("application_headers")
    assert properties == {"delivery_mode": 2, "message_id": attempt_id}
    assert headers == {"TaskName": captured["headers"]["TaskName"]["value"], "TaskID": attempt_id}


def test_cogman_retry_of_a_failed_go_task_leaves_retries_and_is_followed(
    app: App, rabbit: str, redis_url: str, go_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
):
    from cogman.cli.main import main

    failed = as_go_left_it(go_redis, REST_RETRY["original_before"]["raw"], status=Status.FAILED, fail_error="boom")
    argv = ["-A", "tests.integration.gowire_app", "--broker", rabbit, "--backend", redis_url]
    assert main([*argv, "retry", failed.task_id, "--retry", "3"]) == 0
    attempt_id = go_retry_id(failed.task_id)
    assert attempt_id in capsys.readouterr().out
    assert GoRecord.from_json(go_redis.get(failed.task_id), "k").retry == 2  # 3 added, 1 taken: 2 automatic left
    assert app.result(failed.task_id).latest().task_id == attempt_id  # AsyncResult follows the manual retry
    assert app.result(failed.task_id).status is Status.RETRY
    assert main([*argv, "retry", failed.task_id]) == 1  # its latest attempt has not failed
    assert "not failed" in capsys.readouterr().err
    assert taken_off(rabbit, "high_priority_queue_0").body == failed.payload


def test_forget_deletes_a_go_chains_records(app: App, go_redis: redis.Redis):
    failed = as_go_left_it(go_redis, REST_RETRY["original_before"]["raw"], status=Status.FAILED, fail_error="boom")
    retry = failed.retry_attempt(go_retry_id(failed.task_id)).evolve(status=Status.FAILED)
    go_redis.set(retry.task_id, retry.to_json(), ex=3600)
    result = app.result(failed.task_id)
    assert result.latest().task_id == retry.task_id
    result.forget()
    assert go_redis.get(failed.task_id) is None and go_redis.get(retry.task_id) is None
    assert app.backend.get(failed.task_id) is None
    result.forget()  # twice: nothing to do


def test_a_manual_retry_rabbitmq_does_not_confirm_fails_its_attempt_and_says_so(redis_url: str, go_redis: redis.Redis):
    """No re-enqueue sweep reads Go records: an attempt whose message RabbitMQ never confirmed is recorded
    failed with the reason, and the error reaches the operator; the chain can be retried again."""
    from tests.ports import free_ports

    port = free_ports(1)  # nothing listens there: RabbitMQ unreachable
    app = App("goadmin-down", broker=f"amqp://guest:guest@127.0.0.1:{port}//", backend=redis_url,
              connection_timeout=1, request_timeout=1)  # fmt: skip
    failed = as_go_left_it(go_redis, REST_RETRY["original_before"]["raw"], status=Status.FAILED, fail_error="boom")
    try:
        with pytest.raises(BrokerUnavailable):
            retry_task(app, failed.task_id)
        attempt = GoRecord.from_json(go_redis.get(go_retry_id(failed.task_id)), "k")
        assert attempt.status is Status.FAILED and attempt.fail_error.startswith("manual retry not published")
        assert GoRecord.from_json(go_redis.get(failed.task_id), "k").retry == 0  # 1 added, 1 taken
        assert app.result(failed.task_id).latest().task_id == attempt.task_id  # failed: retryable again
    finally:
        app.close()
