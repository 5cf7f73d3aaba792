"""schemathesis against ``/openapi.json``: generated requests, valid and invalid, to every operation of
the running API (Redis behind it, with records in it), and none may get a 5xx. Examples are bounded so
the run stays short in CI."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from cogman import App, TaskFailed
from cogman.api import create_app
from tests.admin_app import register
from tests.integration.api_helpers import serving
from tests.integration.redis_helpers import drop_prefix

TOKEN = "schema-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 50


@pytest.fixture
def base_url(redis_url: str) -> Iterator[str]:
    prefix = f"schematest-{uuid.uuid4().hex[:8]}"
    app = register(App("admin", broker="memory://", backend=redis_url, redis_prefix=prefix))
    worker = app.start_background(concurrency=2)
    try:
        app.send_task("admin.add", (1, 2)).get(timeout=30)
        with pytest.raises(TaskFailed):
            app.send_task("admin.fail", ("x",)).get(timeout=30)
        with serving(create_app(app, token=TOKEN)) as base:
            yield base
    finally:
        worker.stop()
        app.close()
        drop_prefix(redis_url, prefix)


def test_no_generated_request_gets_a_server_error(base_url: str):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"GET /list", "GET /get", "GET /daterangecount", "GET /info", "POST /retry", "GET /ping"} <= labels
    failures: list[str] = []
    calls = {mode: 0 for mode in GenerationMode}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                calls[mode] += fuzz(operation, mode, base_url, failures)
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise  # an operation without parameters has no invalid request to make, but a valid one
    assert failures == []
    assert calls[GenerationMode.POSITIVE] >= len(operations) and calls[GenerationMode.NEGATIVE] >= EXAMPLES


def fuzz(operation: Any, mode: GenerationMode, base_url: str, failures: list[str]) -> int:
    """Call ``operation`` with up to EXAMPLES generated requests; note every 5xx; return how many ran."""
    ran = 0

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case) -> None:
        nonlocal ran
        response = case.call(base_url=base_url, headers=AUTH, timeout=30)
        ran += 1
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r}: "
                            f"{response.status_code} {response.text[:200]}")  # fmt: skip

    call()
    return ran
