"""The API docs in a real browser, offline: every asset comes from the product, none from a CDN.

Swagger UI only: Redoc's bundle always loads its footer logo from cdn.redoc.ly."""

from playwright.sync_api import expect

from accounts import actions as account_actions
from tests.browser.conftest import SCHEMA_WAIT_MS, log_in


def only_from(page, origin: str) -> list[str]:
    """Refuse every request that leaves the product; the list collects what was tried."""
    foreign = []

    def route(route):
        if route.request.url.startswith(origin) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", route)
    return foreign


def test_swagger_ui_lists_the_operations_without_a_cdn(page, shot, live_server):
    account_actions.do_create_user("dora", "dora-password-1")
    foreign = only_from(page, live_server.url)
    log_in(page, "dora", "dora-password-1")
    page.goto("/api/docs/")
    paths = page.locator(".opblock-summary-path")
    # Swagger UI shows "loading" until /api/schema/ answers (generated per request; slow on a loaded machine).
    expect(paths.first).to_be_visible(timeout=SCHEMA_WAIT_MS)
    expect(paths.filter(has_text="/api/v1/vms/{uuid}/start/")).to_have_count(1)
    expect(paths.filter(has_text="/api/v1/networks/")).not_to_have_count(0)
    expect(page.locator(".opblock-summary-method").first).to_be_visible()
    assert paths.count() > 50  # every operation, not a stub
    shot(page, "swagger")
    assert foreign == []

