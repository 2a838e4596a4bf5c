"""The portal in a real browser: sign-up, OTP enrolment, tokens, SSH keys, VMs."""

import base64
import re
import time

from django.core import mail
from django_otp.oath import TOTP
from playwright.sync_api import expect

from accounts.models import APIToken
from tests.browser.conftest import log_in
from vms.models import SSHKey

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1L0f0dB4JqZ1nlMHVzrb6R2q1zwI0iNQ7DP9BYbJt dora@laptop"


def code_for(secret_b32: str, steps_ahead: int = 0) -> str:
    totp = TOTP(base64.b32decode(secret_b32))
    totp.time = time.time() + 30 * steps_ahead
    return f"{totp.token():06d}"


def test_signup_verify_enrol_otp_and_manage_tokens(page, shot, live_server):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.click("text=Sign up")
    page.fill("#id_username", "dora")
    page.fill("#id_email", "dora@example.com")
    page.fill("#id_password1", "a-long-passphrase-9")
    page.fill("#id_password2", "a-long-passphrase-9")
    shot(page, "1-signup")
    page.click("main button[type=submit]")
    expect(page.locator("h1")).to_have_text("Check your mail")

    link = re.search(r"https?://\S+/signup/verify/\S+", mail.outbox[-1].body).group(0)
    page.goto(link.replace("http://testserver", live_server.url))
    expect(page.locator(".message.success")).to_contain_text("verified")
    # The link verifies the address only (issue 23.4): the password still logs in.
    expect(page).to_have_url(re.compile(r"/login/"))
    page.fill("#id_username", "dora")
    page.fill("#id_password", "a-long-passphrase-9")
    page.click("main button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")
    shot(page, "2-dashboard")

    # Tokens need a second factor first.
    page.click("text=dora")
    page.click("text=Manage your API tokens")
    expect(page.locator("main")).to_contain_text("set up two-factor authentication")
    page.click("text=set up two-factor authentication")
    expect(page.locator("img.qr")).to_be_visible()
    secret = page.locator("#otp-secret").inner_text()
    shot(page, "3-otp-enrolment")
    page.fill("#id_code", code_for(secret))
    page.click("main button[type=submit]")
    expect(page.locator("h1")).to_have_text("Your backup codes")
    assert page.locator("#backup-codes li").count() == 10
    shot(page, "4-backup-codes")

    page.goto("/account/tokens/")
    page.fill("#id_name", "laptop")
    page.check("input[name=scope][value=read]")
    page.click("text=Create token")
    raw = page.locator("#new-token").inner_text().strip()
    assert raw.startswith("uc_")
    shot(page, "5-token-created")
    token = APIToken.objects.get(user__username="dora", name="laptop")
    assert token.scope == "read" and token.revoked is None

    page.goto("/account/tokens/")
    expect(page.locator("#new-token")).to_have_count(0)  # shown once
    page.locator(f'tr[data-token="{token.uuid}"] button:text("Revoke")').click()
    expect(page.locator(f'tr[data-token="{token.uuid}"]')).to_contain_text("revoked")
    shot(page, "6-token-revoked")
    token.refresh_from_db()
    assert token.revoked is not None

    # Log out and in again: now the code is asked for.
    page.click("text=Log out")
    log_in(page, "dora", "a-long-passphrase-9")
    expect(page).to_have_url(re.compile(r"/login/otp/"))
    page.fill("#id_code", code_for(secret, steps_ahead=1))
    page.click("main button[type=submit]")
    expect(page.locator("h1")).to_have_text("Dashboard")


def test_add_ssh_key_and_see_quota_message(page, shot, alice, alice_project):
    from accounts.actions import do_set_quota

    log_in(page, "alice", "alice-password-1")
    page.click("nav >> text=SSH keys")
    page.fill("#id_name", "laptop")
    page.fill("#id_public_key", "not a key")
    page.click("text=Add key")
    expect(page.locator(".field.has-error")).to_be_visible()
    page.fill("#id_public_key", KEY)
    page.click("text=Add key")
    expect(page.locator("#ssh-keys")).to_contain_text("laptop")
    shot(page, "1-ssh-key-added")
    assert SSHKey.objects.filter(project=alice_project, name="laptop").exists()

    do_set_quota(alice, alice_project, quota_cores=1)
    page.click("nav >> text=VMs")
    page.click("text=New VM")
    page.fill("#id_name", "big")
    page.fill("#id_cores", "4")
    page.click("text=Create VM")
    expect(page.locator("main")).to_contain_text("Quota of project")
    expect(page.locator("main")).to_contain_text("cores: 0 in use + 4 requested > quota 1")
    shot(page, "2-quota-exceeded")


def test_pages_render_without_javascript_errors(page, shot, alice, alice_project):
    log_in(page, "alice", "alice-password-1")
    for path in ["/", "/vms/", "/vms/new/", "/networks/", "/ssh-keys/", "/images/", "/images/upload/", "/projects/",
                 f"/projects/{alice_project.uuid}/", f"/projects/{alice_project.uuid}/audit/", "/account/",
                 "/account/tokens/"]:
        response = page.goto(path)
        assert response.status == 200, path
        expect(page.locator("header.topbar")).to_be_visible()
    shot(page, "audit-log")
