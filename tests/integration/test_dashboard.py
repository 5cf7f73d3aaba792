"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): it asks
for the token, shows the tasks a real worker ran, filters them, re-runs a failed one with the retry
button, and renders the XSS sample as text. The run saves a screenshot: docs/dashboard.png when
COGMAN_UPDATE_SCREENSHOT=1 (to refresh the docs' picture), else a temporary file, so a test run leaves
the checkout clean."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cogman.admin import actions as admin
from cogman.api import create_app
from cogman.status import Status
from tests.admin_app import XSS
from tests.integration.api_helpers import Stack, serving, wait_until_final
from tests.integration.rabbit_helpers import wait_for

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
TOKEN = "dashboard-test-token"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def row_of(page: Page, task_id: str) -> Any:
    return page.locator(f'#tasks tr[data-task-id="{task_id}"]')


@pytest.mark.parametrize("backend_options", ["redis"], indirect=True)
def test_dashboard(stack: Stack, browser: Browser, tmp_path: Path):
    screenshot = DOCS_SCREENSHOT if os.environ.get("COGMAN_UPDATE_SCREENSHOT") == "1" else tmp_path / "dashboard.png"
    adds = [stack.send("admin.add", i, 10) for i in range(3)]
    failed = stack.send("admin.fail", "disk full", primary_key="order-7")
    xss = stack.send(XSS, XSS)
    wait_until_final([*adds, failed, xss])

    dialogs: list[str] = []
    page_errors: list[str] = []
    with serving(create_app(stack.api_app, token=TOKEN)) as base:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and page_errors.append(message.text))
        page.goto(base + "/")

        # The API wants a token: the page asks for it, then shows what the worker ran
        expect(page.locator("#token-panel")).to_be_visible()
        page.fill("#token-input", TOKEN)
        page.click("#token-form button")
        expect(page.locator("#token-panel")).to_be_hidden()
        page_errors.clear()  # the 401s before the token was given are expected
        for result in [*adds, failed, xss]:
            expect(row_of(page, result.id)).to_have_count(1)
        expect(page.locator('[data-status="success"]')).to_have_text("3")
        expect(page.locator('[data-status="failed"]')).to_have_text("2")
        expect(page.locator("#page-info")).to_have_text("1-5 of 5")
        expect(page.locator("#queues tbody")).to_contain_text("high_priority_queue_0")
        expect(page.locator("#workers tbody")).to_contain_text("high_priority_queue_0")
        expect(page.locator("#chart svg rect.bar-total")).not_to_have_count(0)

        # The XSS sample is text: no element was made of it and no script ran
        expect(row_of(page, xss.id).locator(".task-name")).to_have_text(XSS)
        expect(row_of(page, xss.id).locator(".task-error")).to_have_text(f"RuntimeError: {XSS}")
        assert page.locator("img").count() == 0
        row_of(page, xss.id).click()
        expect(page.locator("#detail-error")).to_have_text(f"RuntimeError: {XSS}")
        expect(page.locator("#detail-payload")).to_contain_text(XSS)
        expect(page.locator('#detail-fields [data-field="name"]')).to_have_text(XSS)
        assert page.locator("img").count() == 0

        # Filters
        page.select_option("#filter-status", "failed")
        page.click("#apply-filters")
        expect(page.locator("#page-info")).to_have_text("1-2 of 2")
        expect(row_of(page, adds[0].id)).to_have_count(0)
        page.fill("#filter-pk", "order-7")
        page.click("#apply-filters")
        expect(page.locator("#page-info")).to_have_text("1-1 of 1")
        expect(row_of(page, failed.id)).to_have_count(1)

        # The retry button re-runs the failed task: a second attempt appears in the backend and runs
        row_of(page, failed.id).click()
        expect(page.locator("#detail-error")).to_have_text("ValueError: disk full")
        page.click("#retry-button")
        expect(page.locator("#retry-result")).to_contain_text("retrying as")
        wait_for(lambda: len(admin.chain(stack.api_app.backend, failed.id)) == 2, 30, "the retry attempt")
        second = admin.chain(stack.api_app.backend, failed.id)[1]
        assert (second.attempt, second.original_task_id) == (2, failed.id)
        wait_for(lambda: stack.api_app.backend.get(second.task_id).status is Status.FAILED, 60, "the retry to run")
        page.click("#refresh")
        expect(page.locator("#attempts tbody tr")).to_have_count(2)

        page.click("#clear-filters")
        expect(page.locator("#page-info")).to_have_text("1-6 of 6")
        page.screenshot(path=str(screenshot), full_page=True)
        page.close()

    assert screenshot.read_bytes().startswith(b"\x89PNG")

    assert dialogs == []
    assert page_errors == []
