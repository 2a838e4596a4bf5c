"""Issue 13: a staff user enrols the second factor in a real browser and reaches the admin.

The code is computed from the key the page SHOWS (never read from the database): Chromium's own
requests (favicon.ico) once started a new enrolment behind the page's back and no code ever matched.
"""

import re

from playwright.sync_api import expect

from accounts import actions
from tests.browser.conftest import log_in
from tests.browser.test_portal import code_for


def test_staff_enrols_with_the_key_shown_and_reaches_the_admin(page, shot, live_server):
    actions.do_create_user("olga", "olga-staff-password-1", is_staff=True)
    log_in(page, "olga", "olga-staff-password-1")
    expect(page).to_have_url(re.compile(r"/account/otp/"))
    expect(page.locator("img.qr")).to_be_visible()
    secret = page.locator("#otp-secret").inner_text()
    shot(page, "1-enrolment")
    # A reload, another tab or the browser's own requests keep the same pending key.
    page.reload()
    assert page.locator("#otp-secret").inner_text() == secret
    favicon = page.goto("/favicon.ico")  # what Chromium asks for on its own
    assert favicon.status == 200 and favicon.headers["content-type"] == "image/x-icon"
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/account/otp/"))
    assert page.locator("#otp-secret").inner_text() == secret
    page.fill("#id_code", code_for(secret))
    page.click("main button[type=submit]")
    expect(page.locator("h1")).to_have_text("Your backup codes")
    shot(page, "2-backup-codes")
    page.goto("/admin/")
    expect(page.locator("#site-name")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/admin/$"))
    shot(page, "3-admin")
