"""Issue 23.8: a Content-Security-Policy on every page, and no page of the portal, the admin or the API
docs breaks under it (Chromium reports every violation on the console)."""

import re

from playwright.sync_api import expect

from accounts.tests.conftest import enrol_totp, totp_code
from tests.browser.conftest import SCHEMA_WAIT_MS, log_in


def _watch_violations(page) -> list[str]:
    violations = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    return violations


def test_portal_pages_run_under_the_policy(page, alice, alice_project):
    violations = _watch_violations(page)
    log_in(page, "alice", "alice-password-1")
    for path in ["/", "/vms/", "/vms/new/", "/networks/", "/ssh-keys/", "/images/", "/images/upload/", "/projects/",
                 f"/projects/{alice_project.uuid}/", f"/projects/{alice_project.uuid}/audit/", "/account/",
                 "/account/tokens/", "/account/otp/", "/billing/"]:
        response = page.goto(path)
        assert response.status == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self' 'nonce-" in policy and "stripe" not in policy, path
    assert violations == []


def test_confirmations_still_ask_without_inline_handlers(page, alice):
    violations = _watch_violations(page)
    device, _ = enrol_totp(alice)
    log_in(page, "alice", "alice-password-1")
    page.fill("#id_code", totp_code(device, steps_ahead=1))
    page.click("main button[type=submit]")
    page.goto("/account/otp/")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("text=Turn off")
    expect(page).to_have_url(re.compile(r"/account/otp/$"))
    assert asked == ["Turn two-factor authentication off?"]  # dismissed: still on
    assert violations == []


def test_admin_and_api_docs_run_under_the_policy(page, staff):
    violations = _watch_violations(page)
    device, _ = enrol_totp(staff)
    log_in(page, "staff", "staff-password-1")
    page.fill("#id_code", totp_code(device, steps_ahead=1))
    page.click("main button[type=submit]")
    for path in ["/admin/", "/admin/auth/user/", "/admin/accounts/project/", "/admin/accounts/project/add/",
                 "/admin/vms/vm/", "/admin/accounts/auditentry/"]:
        response = page.goto(path)
        assert response.status == 200 and "content-security-policy" in response.headers, path
    page.goto("/admin/auth/user/")
    page.click("#changelist-filter a >> nth=1")  # the admin's own scripts still work
    response = page.goto("/api/docs/")
    assert "content-security-policy" in response.headers
    # Swagger UI shows "loading" until /api/schema/ answers; the schema is generated per request and took
    # longer than expect()'s 5 s default on a loaded machine: wait for the page's own signal, the operations.
    expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=SCHEMA_WAIT_MS)
    assert page.locator(".opblock-summary-path", has_text="/api/v1/hosts/").count() > 0  # staff see staff's API
    assert violations == []
