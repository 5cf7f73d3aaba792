"""The API against web pages and hostile clients (issue 19, items 1, 7, 13, 16, 17): a DNS-rebound page
and a cross-site ``no-cors`` POST in a real Chromium (Debian's /usr/bin/chromium, its resolver told to
send ``rebind.example`` and ``evil.example`` to 127.0.0.1), and httpx sending what a browser or an
attacker would: other ``Host`` names, other local addresses, ``*`` origins, bodies of the wrong type
or size, a token no header can carry; ``/healthz``'s cache and ``/list``'s cut fields."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, sync_playwright
from pydantic import BaseModel
from starlette.types import Message, Receive, Scope, Send

from cogman import App, TaskFailed
from cogman.admin import actions as admin
from cogman.api import create_app
from cogman.api.guard import MAX_BODY_BYTES, InsecureSettings
from cogman.api.health import HEALTHZ_CACHE_SECONDS
from cogman.api.routes import LIST_FIELD_CHARS
from tests.admin_app import register
from tests.integration.api_helpers import free_port, serving, wait_for_api
from tests.integration.rabbit_helpers import ROOT
from tests.integration.redis_helpers import drop_prefix
from tests.integration.test_dashboard import CHROMIUM, FLAGS

TOKEN = "security-test-token"
SECRET = "card-4242-4242"
MEMORY_ENV = {"COGMAN_BROKER_URL": "memory://", "COGMAN_BACKEND_URL": "memory://", "PYTHONPATH": str(ROOT)}
RESOLVER = "--host-resolver-rules=MAP rebind.example 127.0.0.1,MAP evil.example 127.0.0.1"


@pytest.fixture
def api_app(redis_url: str) -> Iterator[App]:
    """An app on Redis (its own prefix) with a worker on memory://, holding a succeeded task whose
    payload is SECRET and a failed one, whose id is ``api_app.failed_id``."""
    prefix = f"sectest-{uuid.uuid4().hex[:8]}"
    app = register(App("admin", broker="memory://", backend=redis_url, redis_prefix=prefix))
    worker = app.start_background(concurrency=2)
    try:
        app.send_task("admin.add", (SECRET, "")).get(timeout=30)
        failed = app.send_task("admin.fail", ("boom",))
        with pytest.raises(TaskFailed):
            failed.get(timeout=30)
        app.failed_id = failed.id
        yield app
    finally:
        worker.stop()
        app.close()
        drop_prefix(redis_url, prefix)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, RESOLVER])
        yield chromium
        chromium.close()


class Recorder:
    """ASGI wrapper around the API: what each request was answered, and the body bytes the API pulled."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.answers: list[tuple[str, str, int]] = []
        self.body_read = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting_receive() -> Message:
            message = await receive()
            self.body_read += len(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.answers.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await self.app(scope, counting_receive, recording_send)


def message_of(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["message"])


# 1 (a) DNS rebinding


def test_a_rebound_page_cannot_read_the_api(api_app: App, browser: Browser):
    with serving(create_app(api_app)) as base:
        port = base.rsplit(":", 1)[1]
        page = browser.new_page()
        landing = page.goto(f"http://rebind.example:{port}/")  # the attacker's name, now 127.0.0.1
        assert landing is not None and landing.status == 421
        status, text = page.evaluate("fetch('/list?limit=100').then(async r => [r.status, await r.text()])")
        page.close()
    assert status == 421 and SECRET not in text
    assert f"Host 'rebind.example:{port}' is not a loopback name" in json.loads(text)["errors"][0]["message"]


def test_without_a_token_only_loopback_names_are_answered(api_app: App):
    with serving(create_app(api_app)) as base, httpx.Client(base_url=base) as http:
        port = base.rsplit(":", 1)[1]
        for host in ("localhost", f"localhost:{port}", "127.0.0.1", "127.3.2.1:80", f"[::1]:{port}", "LOCALHOST"):
            assert http.get("/list", headers={"Host": host}).status_code == 200, host
        for host in ("attacker.example", f"attacker.example:{port}", "localhost.attacker.example", "10.1.2.3", ""):
            for method, path in (("GET", "/list"), ("POST", "/retry"), ("GET", "/")):
                body = {"task_id": api_app.failed_id, "force": True}
                refused = http.request(method, path, json=body, headers={"Host": host})
                assert refused.status_code == 421 and f"Host {host!r}" in message_of(refused), (host, path)
    assert len(admin.chain(api_app.backend, api_app.failed_id)) == 1
    with serving(create_app(api_app, token=TOKEN)) as base, httpx.Client(base_url=base) as http:
        # with a token, any name: the token is what a rebound page cannot send
        anywhere = {"Host": "api.ops.example", "Authorization": f"Bearer {TOKEN}"}
        assert http.get("/list", headers=anywhere).status_code == 200
        assert http.get("/list", headers={"Host": "api.ops.example"}).status_code == 401


# 1 (b) '*' origins


def test_any_origin_needs_a_token(redis_url: str):
    app = App("admin", broker="memory://", backend=redis_url, api_cors_origins=["*"])
    try:
        with pytest.raises(InsecureSettings, match=r"refusing CORS origin '\*' without an API token"):
            create_app(app)
        with pytest.raises(InsecureSettings, match="'\\*'"):
            create_app(app, token=None, cors_origins=["https://ops.example", "*"])
        create_app(app, token=TOKEN)  # with a token, '*' is a choice
        create_app(app, cors_origins=["https://ops.example"])
    finally:
        app.close()
    refused = cogman_api("--cors-origin", "*")
    assert refused.returncode == 2 and "refusing CORS origin '*' without an API token" in refused.stderr


def cogman_api(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``cogman api`` that should refuse to start (the port is free; it would serve on it otherwise)."""
    return subprocess.run(
        [sys.executable, "-m", "cogman", "-A", "tests.admin_app", "api", "--port", str(free_port()), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **MEMORY_ENV, **(env or {})},
    )


# 1 (c) a body that is not declared JSON


def test_a_cross_site_no_cors_post_does_not_rerun_a_task(api_app: App, browser: Browser):
    failed_id = api_app.failed_id
    recorder = Recorder(create_app(api_app))
    evil_page = (
        "<!doctype html><title>cat pictures</title><script>"
        "window.attack = (url, body) => Promise.all(["
        "fetch(url, {method: 'POST', mode: 'no-cors', body: JSON.stringify(body)}),"  # text/plain;charset=UTF-8
        "fetch(url, {method: 'POST', mode: 'no-cors', body: new Blob([JSON.stringify(body)])})"  # no type at all
        "]).then(() => 'sent');</script>"
    )
    with serving(recorder) as base, serving(html_app(evil_page)) as evil:
        page = browser.new_page()
        page.goto(evil.replace("127.0.0.1", "evil.example") + "/")
        assert page.evaluate("([url, body]) => attack(url, body)", [base + "/retry", {"task_id": failed_id}]) == "sent"
        page.close()
    assert sorted(recorder.answers) == [("POST", "/retry", 415), ("POST", "/retry", 415)]
    assert len(admin.chain(api_app.backend, failed_id)) == 1  # not run again


def test_a_body_must_be_declared_json(api_app: App):
    body = json.dumps({"task_id": api_app.failed_id}).encode()
    with serving(create_app(api_app)) as base, httpx.Client(base_url=base) as http:
        plain = http.post("/retry", content=body, headers={"Content-Type": "text/plain;charset=UTF-8"})
        assert plain.status_code == 415 and "'text/plain;charset=UTF-8'" in message_of(plain)
        untyped = http.post("/retry", content=body)
        assert untyped.status_code == 415 and "application/json (none was sent)" in message_of(untyped)
        form = http.post("/retry", data={"task_id": "x"})
        assert form.status_code == 415 and "application/x-www-form-urlencoded" in message_of(form)
        assert len(admin.chain(api_app.backend, api_app.failed_id)) == 1
        declared = http.post("/retry", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
        assert declared.status_code == 200, declared.text
        suffixed = http.post("/retry", content=b'{"task_id": "nope"}', headers={"Content-Type": "application/x+json"})
        assert suffixed.status_code == 404, suffixed.text  # parsed: the task is unknown


class RetryBody(BaseModel):
    task_id: str


def test_the_fastapi_required_does_not_parse_an_undeclared_body():
    """The guard answers 415 first; the FastAPI the api extra asks for (0.132+) would refuse such a body too."""
    api = FastAPI()

    @api.post("/retry")
    def retry(body: RetryBody) -> str:
        return body.task_id

    async def post(headers: dict[str, str]) -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://localhost") as client:
            return (await client.post("/retry", content=b'{"task_id": "x"}', headers=headers)).status_code

    with ThreadPoolExecutor(1) as thread:  # Playwright's loop may run in this thread
        assert thread.submit(asyncio.run, post({})).result() == 422
        assert thread.submit(asyncio.run, post({"Content-Type": "text/plain"})).result() == 422
        assert thread.submit(asyncio.run, post({"Content-Type": "application/json"})).result() == 200


# 1 (d) embedding applies the same rules; cogman api too


def test_an_embedded_api_refuses_a_request_that_came_in_on_another_address(api_app: App):
    """httpx calls the app in-process as if a server had accepted the request on 10.1.2.3."""

    def get(api: Any, headers: dict[str, str] | None = None, base: str = "http://10.1.2.3:8081") -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=api)
            async with httpx.AsyncClient(transport=transport, base_url=base) as client:
                return await client.get("/list", headers=headers)

        with ThreadPoolExecutor(1) as thread:  # Playwright's loop runs in this thread
            return thread.submit(asyncio.run, call()).result()

    local_name = {"Host": "localhost"}
    refused = get(create_app(api_app), local_name)
    assert refused.status_code == 403 and "came in on 10.1.2.3, not a loopback address" in message_of(refused)
    assert get(create_app(api_app), base="http://[::ffff:127.0.0.1]:8081").status_code == 200  # a dual-stack socket
    insecure = create_app(api_app, insecure=True)
    assert get(insecure).status_code == 200  # Host 10.1.2.3:8081: an IP literal
    assert get(insecure, local_name).status_code == 200
    assert get(insecure, {"Host": "ops.example:8081"}).status_code == 421  # a name could be rebound
    with_token = create_app(api_app, token=TOKEN)
    assert get(with_token).status_code == 401
    assert get(with_token, {"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_cogman_api_applies_the_host_rule():
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cogman", "-A", "tests.admin_app", "api", "--port", str(port), "--insecure"],
        cwd=ROOT,
        env={**os.environ, **MEMORY_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_api(base)
        assert httpx.get(base + "/list").status_code == 200
        assert httpx.get(base + "/list", headers={"Host": f"rebind.example:{port}"}).status_code == 421
        assert httpx.get(base + "/list", headers={"Host": f"10.1.2.3:{port}"}).status_code == 200  # --insecure
    finally:
        server.terminate()
        assert server.wait(30) == 0


# 7 the token before the body, and a cap on bodies


def test_an_unauthenticated_big_post_is_refused_before_its_body_is_read(api_app: App):
    recorder = Recorder(create_app(api_app, token=TOKEN))
    chunks = 32  # of 1 MiB, streamed without a Content-Length

    def big_body() -> Iterator[bytes]:
        for _ in range(chunks):
            yield b" " * (1 << 20)

    with serving(recorder) as base, httpx.Client(base_url=base, timeout=60) as http:
        denied = http.post("/retry", content=big_body(), headers={"Content-Type": "application/json"})
        assert denied.status_code == 401 and recorder.body_read == 0
        authorised = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        streamed = http.post("/retry", content=big_body(), headers=authorised)
        assert streamed.status_code == 413 and f"over {MAX_BODY_BYTES} bytes" in message_of(streamed)
        assert recorder.body_read <= MAX_BODY_BYTES + (1 << 20)  # at most the chunk that crossed the cap
        declared = http.post("/retry", content=b" " * (MAX_BODY_BYTES + 1), headers=authorised)
        assert declared.status_code == 413 and recorder.body_read <= MAX_BODY_BYTES + (1 << 20)
        small = http.post("/retry", json={"task_id": api_app.failed_id}, headers=authorised)
        assert small.status_code == 200, small.text


# 17 a token a header cannot carry


def test_a_non_ascii_token_is_refused_at_start():
    app = App("admin", broker="memory://", backend="memory://")
    try:
        with pytest.raises(InsecureSettings, match="api_token: character 2 of 8 is not visible ASCII") as refused:
            create_app(app, token="pässwörd")
        assert "pässwörd" not in str(refused.value)  # the secret stays out of logs
        with pytest.raises(InsecureSettings, match="character 4 of 7"):
            create_app(app, token="abc def")
    finally:
        app.close()
    started = cogman_api(env={"COGMAN_API_TOKEN": "pässwörd"})
    assert started.returncode == 2 and "api_token: character 2 of 8 is not visible ASCII" in started.stderr


# 16 /healthz's cache


def test_healthz_probes_the_broker_once_per_period(rabbit: str, redis_url: str, monkeypatch: pytest.MonkeyPatch):
    app = App("admin", broker=rabbit, backend=redis_url, redis_prefix=f"sectest-{uuid.uuid4().hex[:8]}")
    probes: list[int] = []
    real_stats = app.broker.queue_stats

    def counted_stats(*args: Any, **kwargs: Any) -> Any:
        probes.append(1)
        return real_stats(*args, **kwargs)

    monkeypatch.setattr(app.broker, "queue_stats", counted_stats)
    api = create_app(app)
    now = [1000.0]
    api.state.health.clock = lambda: now[0]
    try:
        with serving(api) as base, httpx.Client(base_url=base) as http:
            answers = [http.get("/healthz") for _ in range(3)]
            assert [a.status_code for a in answers] == [200, 200, 200] and len(probes) == 1
            now[0] += HEALTHZ_CACHE_SECONDS
            assert http.get("/healthz").status_code == 200 and len(probes) == 2
    finally:
        app.close()


# 13 /list rows carry a bounded part of each record


def test_list_rows_cut_bulky_fields_and_get_has_them_whole(api_app: App):
    bulky = "x" * (LIST_FIELD_CHARS * 3)  # under the record's own cap on errors
    failed = api_app.send_task("admin.fail", (bulky,))
    with pytest.raises(TaskFailed):
        failed.get(timeout=30)
    with serving(create_app(api_app)) as base, httpx.Client(base_url=base) as http:
        rows = {row["task_id"]: row for row in http.get("/list", params={"limit": 1000}).json()["data"]}
        row = rows[failed.id]
        assert row["truncated"] == ["payload", "fail_error", "traceback"]
        for field in row["truncated"]:
            assert len(row[field]) < LIST_FIELD_CHARS + 100 and "...[truncated " in row[field], field
        assert json.loads(row["payload"][:LIST_FIELD_CHARS] + '"]}') == {"args": ["x" * (LIST_FIELD_CHARS - 10)]}
        assert all("truncated" not in r for task_id, r in rows.items() if task_id != failed.id)
        whole = http.get("/get", params={"task_id": failed.id}).json()
        assert bulky in json.dumps(whole["data"]["payload"]) and whole["data"]["fail_error"] == f"ValueError: {bulky}"
        assert whole["meta"]["attempts"][0]["truncated"] == ["payload", "fail_error", "traceback"]


def html_app(html: str) -> Any:
    """A bare ASGI app answering every GET with ``html`` (the attacker's site)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html; charset=utf-8")]})  # fmt: skip
        await send({"type": "http.response.body", "body": html.encode()})

    return app
