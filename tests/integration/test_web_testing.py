"""The testing recipes of docs/fastapi.md and docs/flask.md, run as a user's suite would run them: pytest
in a subprocess, cogman's plugin loaded by its entry point, the example app named by ``--cogman-app``."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

FASTAPI_TESTS = """
import asyncio

from fastapi.testclient import TestClient

from examples.fastapi_app import api, price


def test_an_order_is_priced(cogman_app, cogman_worker):
    with TestClient(api) as client:                      # runs the lifespan: aclose() at the end
        task_id = client.post("/orders", params={"items": 3}).json()["task_id"]
        assert client.get(f"/tasks/{task_id}/result").json() == {"task_id": task_id, "result": 30}


def test_the_async_client_directly(cogman_app, cogman_worker):
    async def scenario():
        result = await price.delay_async(4)
        assert await result.get_async(timeout=10) == 40
        await cogman_app.aclose()

    asyncio.run(scenario())
"""

FLASK_TESTS = """
from examples.flask_app import create_app


def test_an_order_is_priced(cogman_app, cogman_worker):
    client = create_app().test_client()
    task_id = client.post("/orders?items=3").get_json()["task_id"]
    assert client.get(f"/tasks/{task_id}/result").get_json() == {"task_id": task_id, "result": 30}
"""


@pytest.mark.parametrize(("framework", "tests"), [("fastapi", FASTAPI_TESTS), ("flask", FLASK_TESTS)])
def test_the_documented_tests_pass(
    framework: str, tests: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(**{f"test_{framework}_app": textwrap.dedent(tests)})
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{path}" if path else str(ROOT))
    outcome = pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", f"--cogman-app=examples.{framework}_app:app"
    )
    outcome.assert_outcomes(passed=tests.count("def test_"))
