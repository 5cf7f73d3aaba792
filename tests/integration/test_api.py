"""The REST API over HTTP (uvicorn on a free port), with tasks run by a real worker on RabbitMQ and the
task log on Redis and on mongomock: every route, every error code, CORS, auth, 503s and the catch-all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cogman import App, TaskFailed
from cogman.api import create_app
from cogman.api.app import PING
from tests.admin_app import register
from tests.integration.api_helpers import Stack, closed_port, serving, wait_until_final
from tests.integration.rabbit_helpers import wait_for


def errors_of(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    assert set(body) == {"errors"}, body
    for error in body["errors"]:
        assert len(error["id"]) == 10 and error["id"][0].isalpha()
        assert error["message"]
    return list(body["errors"])


def field_of(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    return str(errors_of(response)[0]["field"])


def test_read_routes(stack: Stack):
    adds = [stack.send("admin.add", i, i) for i in range(5)]
    failed = stack.send("admin.fail", "boom")
    wait_until_final([*adds, failed])
    all_ids = {r.id for r in [*adds, failed]}
    with serving(create_app(stack.api_app)) as base, httpx.Client(base_url=base, timeout=30) as http:
        ping = http.get("/ping")
        assert (ping.status_code, ping.text) == (200, PING)
        assert http.get("/healthz").json() == {"data": {"backend": "ok", "broker": "ok"}}

        # /get
        got = http.get("/get", params={"task_id": adds[3].id})
        assert got.status_code == 200
        record = got.json()["data"]
        assert (record["task_id"], record["status"], record["result"], record["name"]) == (
            adds[3].id, "success", 6, "admin.add"
        )  # fmt: skip
        assert [a["task_id"] for a in got.json()["meta"]["attempts"]] == [adds[3].id]
        assert field_of(http.get("/get")) == "task_id"
        unknown = http.get("/get", params={"task_id": "no-such-task"})
        assert unknown.status_code == 404 and "no-such-task" in errors_of(unknown)[0]["message"]

        # /list: totals, newest first, pages, filters
        listed = http.get("/list").json()
        assert listed["meta"]["total"] == 6 and {t["task_id"] for t in listed["data"]} == all_ids
        created = [t["created_at"] for t in listed["data"]]
        assert created == sorted(created, reverse=True)
        pages = [http.get("/list", params={"limit": 2, "skip": skip}).json() for skip in (0, 2, 4, 6)]
        assert [len(p["data"]) for p in pages] == [2, 2, 2, 0] and {p["meta"]["total"] for p in pages} == {6}
        assert [t["task_id"] for p in pages for t in p["data"]] == [t["task_id"] for t in listed["data"]]
        only_failed = http.get("/list", params={"status": "failed"}).json()
        assert (only_failed["meta"]["total"], only_failed["data"][0]["task_id"]) == (1, failed.id)
        assert http.get("/list", params={"name": "admin.add"}).json()["meta"]["total"] == 5
        by_id = http.get("/list", params={"task_id": adds[0].id}).json()
        assert [t["task_id"] for t in by_id["data"]] == [adds[0].id]
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert http.get("/list", params={"startDate": future}).json()["meta"]["total"] == 0
        assert field_of(http.get("/list", params={"limit": 1001})) == "limit"
        assert field_of(http.get("/list", params={"skip": -1})) == "skip"
        assert field_of(http.get("/list", params={"status": "lost"})) == "status"
        assert field_of(http.get("/list", params={"startDate": "yesterday"})) == "startDate"
        reversed_range = {"startDate": future, "endDate": "2020-01-01T00:00:00Z"}
        assert field_of(http.get("/list", params=reversed_range)) == "startDate"
        assert field_of(http.get("/list", params={"startDate": "1900-01-01T00:00:00Z"})) == "startDate"

        # /daterangecount: one-minute buckets over the last hour hold every record once
        start = datetime.now(UTC) - timedelta(hours=1)
        counted = http.get("/daterangecount", params={"startDate": start.isoformat(), "interval": 1}).json()
        buckets = counted["data"]
        assert sum(b["Total"] for b in buckets) == 6
        assert (sum(b["CountSuccess"] for b in buckets), sum(b["CountFailed"] for b in buckets)) == (5, 1)
        for bucket in buckets:
            offset = (datetime.fromisoformat(bucket["ID"]) - start).total_seconds()
            assert 0 <= offset < 3600 and abs(offset / 60 - round(offset / 60)) < 1e-6
            assert bucket["Total"] == sum(v for k, v in bucket.items() if k.startswith("Count"))
        assert http.get("/daterangecount").json()["data"][0]["Total"] == 6  # default: 30 days, one-day buckets
        assert field_of(http.get("/daterangecount", params={"interval": 0})) == "interval"
        too_many = {"startDate": "2000-01-01T00:00:00Z", "interval": 1}
        assert field_of(http.get("/daterangecount", params=too_many)) == "interval"
        assert field_of(http.get("/daterangecount", params={"startDate": future})) == "startDate"

        # /info: the queues the worker consumes, read fresh from RabbitMQ, and the delayed tasks apart
        assert stack.send("admin.add", 1, 1, countdown=3600).wait_sent(30)  # waits in the delay ladder
        info = http.get("/info").json()["data"]
        queues = {q["name"]: q for q in info["queues"]}
        assert queues["high_priority_queue_0"]["kind"] == "high" and queues["high_priority_queue_0"]["consumers"] >= 1
        assert queues["cogman.dead_letter"]["kind"] == "dead_letter"
        assert (info["total_queue"], info["total_task"], info["app"]) == (2, 0, "admin")
        assert info["delayed"] == 1 and all(q["kind"] != "delayed" for q in info["queues"])

        # wrong method, unknown route: the envelope, never a bare page
        wrong = http.get("/retry")
        assert wrong.status_code == 405 and "POST" in wrong.headers["allow"] and errors_of(wrong)
        assert http.post("/list").status_code == 405
        missing = http.get("/no/such/route")
        assert missing.status_code == 404 and errors_of(missing)


def test_retry_route(stack: Stack):
    failed = stack.send("admin.fail", "boom")
    done = stack.send("admin.add", 1, 2)
    wait_until_final([failed, done])
    with serving(create_app(stack.api_app)) as base, httpx.Client(base_url=base, timeout=30) as http:
        retried = http.post("/retry", json={"task_id": failed.id, "retry": 2})
        assert retried.status_code == 200, retried.text
        attempt = retried.json()["data"]
        assert (attempt["original_task_id"], attempt["attempt"], attempt["status"]) == (failed.id, 2, "retry")
        # Cogman's manual retry: 2 added, one runs now, one automatic retry is left for it
        with pytest.raises(TaskFailed):
            stack.api_app.result(failed.id).get(timeout=60)
        # Attempt 2's worker spawns attempt 3 before it records its own failure: attempt 3 can end first.
        wait_for(lambda: all(a["status"] == "failed" for a in http.get("/get", params={"task_id": failed.id}).json()
                             ["meta"]["attempts"]), 60, "every attempt's failure to be recorded")  # fmt: skip
        chain = http.get("/get", params={"task_id": failed.id}).json()
        attempts = chain["meta"]["attempts"]
        assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "failed"), (2, "failed"), (3, "failed")]
        assert chain["data"]["retry"] == 0 and chain["meta"]["latest_attempt_id"] == attempts[-1]["task_id"]

        conflict = http.post("/retry", json={"task_id": done.id})
        assert conflict.status_code == 409 and "success" in errors_of(conflict)[0]["message"]
        forced = http.post("/retry", json={"task_id": done.id, "force": True})
        assert forced.status_code == 200
        wait_for(lambda: stack.api_app.backend.get(forced.json()["data"]["task_id"]).status.value == "success", 60,
                 "the forced attempt to run")  # fmt: skip

        assert http.post("/retry", json={"task_id": "nope"}).status_code == 404
        assert field_of(http.post("/retry", json={})) == "task_id"
        assert field_of(http.post("/retry", json={"task_id": failed.id, "retry": 0})) == "retry"
        bad_json = http.post("/retry", content=b"{not json", headers={"content-type": "application/json"})
        assert bad_json.status_code == 400 and errors_of(bad_json)


def test_metrics_route(stack: Stack):
    results = [stack.send("admin.add", i, 1) for i in range(3)] + [stack.send("admin.fail", "x")]
    wait_until_final(results)
    wait_for(lambda: len(stack.api_app.backend.live_workers()) == 1, 30, "the worker's heartbeat")
    with serving(create_app(stack.api_app)) as base, httpx.Client(base_url=base, timeout=30) as http:
        response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("cogman_up", (("component", "backend"),))] == 1
    assert samples[("cogman_up", (("component", "broker"),))] == 1
    assert samples[("cogman_tasks", (("status", "success"),))] == 3
    assert samples[("cogman_tasks", (("status", "failed"),))] == 1
    assert samples[("cogman_tasks_by_name", (("name", "admin.add"), ("status", "success")))] == 3
    assert samples[("cogman_recent_attempt_duration_seconds_count", (("name", "admin.add"),))] == 3
    assert samples[("cogman_queue_messages_ready", (("kind", "high"), ("queue", "high_priority_queue_0")))] == 0
    assert samples[("cogman_queue_consumers", (("kind", "high"), ("queue", "high_priority_queue_0")))] >= 1
    assert samples[("cogman_workers_alive", ())] == 1


@pytest.fixture
def redis_app(redis_url: str) -> Any:
    app = register(App("admin", broker="memory://", backend=redis_url, redis_prefix="apitest-auth"))
    yield app
    app.close()


def test_token_guards_every_route_but_ping_and_healthz(redis_app: App):
    with serving(create_app(redis_app, token="s3cret-token")) as base, httpx.Client(base_url=base) as http:
        assert http.get("/ping").status_code == 200
        assert http.get("/healthz").status_code == 200
        for path in ("/list", "/get?task_id=x", "/daterangecount", "/info", "/metrics", "/openapi.json", "/workers"):
            denied = http.get(path)
            assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer", path
            assert errors_of(denied)
            assert http.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert http.get(path, headers={"Authorization": "Basic czNjcmV0LXRva2Vu"}).status_code == 401
            assert http.get(path, headers={"Authorization": "Bearer s3cret-token"}).status_code in (200, 404), path
        assert http.post("/retry", json={"task_id": "x"}).status_code == 401
        page = http.get("/")  # the page holds no data; it asks for the token
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "'unsafe-inline'" not in page.headers["content-security-policy"]


def test_cors_preflight_is_answered(redis_app: App):
    origin = "https://ops.example"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip
    with serving(create_app(redis_app, cors_origins=[origin])) as base, httpx.Client(base_url=base) as http:
        allowed = http.options("/retry", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == origin
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert http.get("/list", headers={"Origin": origin}).headers["access-control-allow-origin"] == origin
        refused = http.options("/retry", headers={**preflight, "Origin": "https://evil.example"})
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        assert "origin" in errors_of(refused)[0]["message"]
    with serving(create_app(redis_app)) as base, httpx.Client(base_url=base) as http:
        default = http.options("/list", headers=preflight)  # no origin configured: same-origin only
        assert default.status_code == 400 and "access-control-allow-origin" not in default.headers
        plain = http.options("/list")  # not a preflight: the method is not allowed
        assert plain.status_code == 405 and errors_of(plain)


@pytest.mark.parametrize("store", ["redis", "mongodb"])
def test_unreachable_backend_or_broker_is_503(store: str):
    port = closed_port()
    backend = (
        f"redis://127.0.0.1:{port}/0"
        if store == "redis"
        else f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300"
    )
    app = App("down", broker=f"amqp://guest:guest@127.0.0.1:{port}//", backend=backend, request_timeout=1)
    try:
        with serving(create_app(app)) as base, httpx.Client(base_url=base, timeout=60) as http:
            for method, path, body in [
                ("GET", "/list", None),
                ("GET", "/get?task_id=x", None),
                ("GET", "/daterangecount", None),
                ("GET", "/info", None),
                ("GET", "/workers", None),
                ("POST", "/retry", {"task_id": "x"}),
                ("GET", "/healthz", None),
            ]:
                response = http.request(method, path, json=body)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["retry-after"] == "5"
                assert "unreachable" in errors_of(response)[0]["message"], path
            metrics = http.get("/metrics")
            assert metrics.status_code == 200
            assert 'cogman_up{component="backend"} 0.0' in metrics.text
            assert 'cogman_up{component="broker"} 0.0' in metrics.text
    finally:
        app.close()


def test_an_unexpected_error_is_a_500_in_the_envelope(redis_app: App, monkeypatch: pytest.MonkeyPatch):
    def explode(query: Any) -> Any:
        raise RuntimeError("the index is on fire")

    monkeypatch.setattr(redis_app.backend, "query", explode)
    with serving(create_app(redis_app)) as base, httpx.Client(base_url=base) as http:
        response = http.get("/list")
    assert response.status_code == 500
    assert "RuntimeError: the index is on fire" in errors_of(response)[0]["message"]
