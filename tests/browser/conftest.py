"""Browser tests: Playwright drives Debian's chromium (headless, no browser download) against a live server.

Screenshots are kept in $UNCLOUD_TEST_ARTIFACTS (default var/test-artifacts/browser/).
"""

import os
import re
import sys
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("UNCLOUD_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("UNCLOUD_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "browser"))
# How long the API docs may take to show their operations: Swagger UI fetches /api/schema/, which is
# generated per request and took over 5 s while the machine ran several suites at once.
SCHEMA_WAIT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API runs an asyncio loop in this thread while the browser lives; Django then
    # refuses ORM calls from the test body although they run synchronously. The guard protects servers,
    # not a test process: lift it only while a browser is open, never for the tests that follow.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield from _browser()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def _browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        reason = f"playwright is not installed ({error})"
        print(f"tests.browser: SKIPPED: {reason}", file=sys.stderr)
        pytest.skip(reason)
    playwright = sync_playwright().start()
    try:
        # --no-sandbox: chromium's sandbox refuses to run as root, which the test machines are.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
    except Exception as error:
        playwright.stop()
        reason = f"chromium cannot start ({CHROMIUM}): {str(error).splitlines()[0]}"
        print(f"tests.browser: SKIPPED: {reason}", file=sys.stderr)
        pytest.skip(reason)
    yield launched
    launched.close()
    playwright.stop()


@pytest.fixture
def page(browser, live_server, transactional_db, request):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    new_page = context.new_page()
    errors = []
    new_page.on("pageerror", lambda error: errors.append(str(error)))
    yield new_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    new_page.screenshot(path=str(ARTIFACTS / f"{name}--last.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def shot(request):
    """`shot(page, "step")` keeps a full-page screenshot of this moment of the test."""
    def take(page, step: str):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        page.screenshot(path=str(ARTIFACTS / f"{name}--{step}.png"), full_page=True)
    return take


def log_in(page, username: str, password: str):
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("main button[type=submit]")
