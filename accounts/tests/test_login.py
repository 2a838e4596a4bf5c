import re

from django.contrib.auth import get_user_model
from django.core import mail
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import actions
from accounts.models import APIToken, AuditEntry, Project
from accounts.tests.conftest import enrol_totp, login_with_otp, totp_code


def test_enrolment_shows_qr_and_confirms_with_a_code(client, alice):
    client.force_login(alice)
    page = client.get("/account/otp/")
    assert page.status_code == 200 and b"data:image/svg+xml;base64," in page.content
    secret = re.search(rb'id="otp-secret">([A-Z2-7]+)<', page.content).group(1)
    device = TOTPDevice.objects.get(user=alice, confirmed=False)
    wrong = client.post("/account/otp/", {"step": "confirm", "code": "12345x"})
    assert wrong.status_code == 200 and b"does not match" in wrong.content
    device.refresh_from_db()
    device.throttling_failure_count = 0  # the wrong code above throttles the device for a second
    device.throttling_failure_timestamp = None
    device.save()
    done = client.post("/account/otp/", {"step": "confirm", "code": totp_code(device)})
    assert done.status_code == 200 and b"shown only now" in done.content
    device.refresh_from_db()
    assert device.confirmed and secret.decode() in page.content.decode()
    assert len(done.context["codes"]) == 10
    assert StaticToken.objects.filter(device__user=alice).count() == 10
    assert AuditEntry.objects.filter(action="otp.enrol", actor=alice).exists()
    assert client.get("/account/otp/").context["backup_left"] == 10


def test_login_asks_for_the_code_and_refuses_a_wrong_one(client, alice):
    device, _ = enrol_totp(alice)
    response = client.post("/login/", {"username": "alice", "password": "alice-password-1"})
    assert response["Location"] == "/login/otp/"
    assert client.get("/").status_code == 302  # not logged in before the code
    wrong = client.post("/login/otp/", {"code": "99999x"})
    assert wrong.status_code == 200 and b"wrong" in wrong.content
    assert client.get("/").status_code == 302


def test_login_with_totp_then_session_is_verified(client, alice):
    device, _ = enrol_totp(alice)
    response = login_with_otp(client, "alice", "alice-password-1", totp_code(device, steps_ahead=1))
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/account/tokens/").context["verified"] is True


def test_backup_code_works_once(client, alice):
    _, codes = enrol_totp(alice)
    assert login_with_otp(client, "alice", "alice-password-1", codes[0])["Location"] == "/"
    client.post("/logout/")
    again = login_with_otp(client, "alice", "alice-password-1", codes[0])
    assert again.status_code == 200 and b"wrong or was used" in again.content


def test_staff_must_enrol_before_anything_else(client, staff):
    response = client.post("/login/", {"username": "staff", "password": "staff-password-1"})
    assert response.status_code == 302  # no device yet: logged in, but...
    for path in ("/", "/admin/", "/vms/", "/account/tokens/"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer["Location"].startswith("/account/otp/"), path
    assert client.get("/api/v1/projects/").status_code == 403
    assert client.get("/account/otp/").status_code == 200
    device = TOTPDevice.objects.get(user=staff, confirmed=False)
    client.post("/account/otp/", {"step": "confirm", "code": totp_code(device)})
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/accounts/project/").status_code == 200


def test_staff_cannot_turn_otp_off(verified_client, staff):
    client = verified_client(staff, "staff-password-1")
    response = client.post("/account/otp/remove/", follow=True)
    assert b"must keep a second factor" in response.content
    assert TOTPDevice.objects.filter(user=staff, confirmed=True).exists()


def test_customer_can_turn_otp_off(verified_client, alice):
    client = verified_client(alice, "alice-password-1")
    client.post("/account/otp/remove/")
    assert not TOTPDevice.objects.filter(user=alice).exists()
    assert client.post("/login/", {"username": "alice", "password": "alice-password-1"}).status_code == 302


def test_admin_login_page_is_the_portal_login(client, staff):
    response = client.get("/admin/login/?next=/admin/vms/vm/")
    assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_rate_limit_stops_guessing_even_with_the_right_password(client, alice, charlie, settings):
    settings.UNCLOUD_LOGIN_FAILURES_PER_USER = 3
    for _ in range(3):
        assert b"did not match" in client.post("/login/", {"username": "alice", "password": "guess"}).content
    blocked = client.post("/login/", {"username": "alice", "password": "alice-password-1"})
    assert blocked.status_code == 200 and b"Too many failed attempts" in blocked.content
    assert client.get("/").status_code == 302
    # Another account from the same address is not locked out by alice's counter.
    assert client.post("/login/", {"username": "charlie", "password": "charlie-password-1"}).status_code == 302


def test_rate_limit_per_address_across_usernames(client, alice, settings):
    settings.UNCLOUD_LOGIN_FAILURES_PER_ADDRESS = 4
    for name in ("a", "b", "c", "d"):
        client.post("/login/", {"username": name, "password": "x"})
    blocked = client.post("/login/", {"username": "alice", "password": "alice-password-1"})
    assert b"Too many failed attempts" in blocked.content


def test_otp_step_is_rate_limited(client, alice, settings):
    settings.UNCLOUD_LOGIN_FAILURES_PER_USER = 2
    device, _ = enrol_totp(alice)
    client.post("/login/", {"username": "alice", "password": "alice-password-1"})
    for _ in range(2):
        client.post("/login/otp/", {"code": "00000x"})
    device.refresh_from_db()
    device.throttling_failure_count = 0  # lift django-otp's own throttle: we test ours
    device.save()
    response = client.post("/login/otp/", {"code": totp_code(device, steps_ahead=1)})
    assert response.status_code == 200 and b"Too many failed attempts" in response.content


def test_login_next_must_be_local(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "alice-password-1",
                                       "next": "https://evil.example/"})
    assert response["Location"] == "/"


def _verification_link() -> str:
    return re.search(r"http://testserver(/signup/verify/\S+)", mail.outbox[-1].body).group(1)


def test_signup_needs_the_mailed_link(client, db):
    response = client.post("/signup/", {"username": "dora", "email": "dora@example.com",
                                         "password1": "a-long-passphrase-9", "password2": "a-long-passphrase-9"})
    assert response.status_code == 200 and b"Check your mail" in response.content
    assert mail.outbox[-1].to == ["dora@example.com"]
    assert client.post("/login/", {"username": "dora", "password": "a-long-passphrase-9"}).status_code == 200
    link = _verification_link()
    verified = client.get(link)
    assert verified.status_code == 302 and verified["Location"].startswith("/login/")
    assert client.get("/").status_code == 302  # the link verifies the address; it does not log in
    assert client.post("/login/", {"username": "dora", "password": "a-long-passphrase-9"}).status_code == 302
    assert client.get("/").status_code == 200
    assert Project.objects.filter(owner__username="dora").count() == 1
    client.post("/logout/")
    assert client.get(link).status_code == 400  # a link works once


def test_verification_link_never_reactivates_or_logs_in(client, db, staff):
    """Issue 23.4: staff deactivate a verified sign-up; its old link must stay dead."""
    client.post("/signup/", {"username": "dora", "email": "dora@example.com",
                             "password1": "a-long-passphrase-9", "password2": "a-long-passphrase-9"})
    link = _verification_link()
    client.get(link)
    dora = get_user_model().objects.get(username="dora")
    assert dora.is_active
    dora.is_active = False  # what the admin's "active" checkbox does
    dora.save()
    again = client.get(link)
    assert again.status_code == 400
    dora.refresh_from_db()
    assert not dora.is_active and client.get("/").status_code == 302


def test_signup_refuses_a_taken_email_and_bad_passwords(client, alice):
    alice.email = "alice@example.com"
    alice.save()
    taken = client.post("/signup/", {"username": "alice2", "email": "ALICE@example.com",
                                     "password1": "a-long-passphrase-9", "password2": "a-long-passphrase-9"})
    assert b"Check your mail" in taken.content  # the same answer as for a new address (issue 23.9) ...
    assert not get_user_model().objects.filter(username="alice2").exists()  # ... but no second account
    mail.outbox.clear()
    weak = client.post("/signup/", {"username": "eve", "email": "eve@example.com", "password1": "123",
                                    "password2": "123"})
    assert weak.status_code == 200 and not mail.outbox


def test_signup_can_be_closed(client, db, settings):
    settings.UNCLOUD_SIGNUP_ENABLED = False
    assert client.get("/signup/").status_code == 404


def test_password_reset_revokes_tokens(client, alice):
    alice.email = "alice@example.com"
    alice.save()
    token, _ = actions.do_create_token(alice, "old")
    assert client.post("/password-reset/", {"email": "alice@example.com"}).status_code == 302
    link = re.search(r"http://testserver(/password-reset/\S+/\S+/)", mail.outbox[-1].body).group(1)
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200 and form_page.context["validlink"]
    done = client.post(form_page.redirect_chain[-1][0], {"new_password1": "brand-new-passphrase-7",
                                                         "new_password2": "brand-new-passphrase-7"})
    assert done.status_code == 302
    token.refresh_from_db()
    assert token.revoked is not None
    assert client.post("/login/", {"username": "alice", "password": "brand-new-passphrase-7"}).status_code == 302
    assert AuditEntry.objects.filter(action="user.password_reset").exists()
    assert APIToken.objects.filter(user=alice, revoked__isnull=True).count() == 0


def test_enrolment_keeps_one_pending_key_and_nothing_else_starts_one(client, staff):
    """Issue 13: the browser's favicon request (redirected here) replaced the key being scanned."""
    client.post("/login/", {"username": "staff", "password": "staff-password-1"})
    assert client.get("/favicon.ico").status_code == 200  # served, not sent to enrolment
    assert client.get("/admin/").status_code == 302
    assert not TOTPDevice.objects.filter(user=staff).exists()  # only the enrolment page starts one
    first = client.get("/account/otp/").context["secret"]
    assert client.get("/account/otp/").context["secret"] == first
    assert client.get("/account/otp/?renew=1").context["secret"] == first
    assert TOTPDevice.objects.filter(user=staff, confirmed=False).count() == 1
    # A typo does not make the right code wait.
    client.post("/account/otp/", {"step": "confirm", "code": "000000"})
    device = TOTPDevice.objects.get(user=staff, confirmed=False)
    session_before = client.cookies["sessionid"].value
    done = client.post("/account/otp/", {"step": "confirm", "code": totp_code(device)})
    assert done.status_code == 200 and b"shown only now" in done.content
    assert client.cookies["sessionid"].value != session_before  # 23.9: passing the factor rotates the id


def test_a_stale_pending_enrolment_is_replaced(client, alice):
    from datetime import timedelta

    from django.utils import timezone

    client.force_login(alice)
    first = client.get("/account/otp/").context["secret"]
    TOTPDevice.objects.filter(user=alice).update(created_at=timezone.now() - timedelta(hours=1))
    assert client.get("/account/otp/").context["secret"] != first
    assert TOTPDevice.objects.filter(user=alice, confirmed=False).count() == 1
