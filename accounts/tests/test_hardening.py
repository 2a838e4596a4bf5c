"""Issue 23.9, the smaller points: sign-up, passwords, mail, sessions, bodies, admin password changes."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core import mail
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import actions
from accounts.models import APIToken
from accounts.tests.conftest import enrol_totp, totp_code


def _signup(client, username, email, password="a-long-passphrase-9"):
    return client.post("/signup/", {"username": username, "email": email, "password1": password,
                                    "password2": password})


def test_signup_does_not_tell_which_addresses_exist(client, alice):
    alice.email = "alice@example.com"
    alice.save()
    taken = _signup(client, "alice2", "ALICE@example.com")
    fresh = _signup(client, "dora", "dora@example.com")
    assert taken.status_code == fresh.status_code == 200
    assert taken.content.replace(b"ALICE@example.com", b"X") == fresh.content.replace(b"dora@example.com", b"X")
    assert not get_user_model().objects.filter(username="alice2").exists()
    told = [m for m in mail.outbox if m.to == ["ALICE@example.com"]]
    assert told and "already has an account" in told[0].body


def test_unverified_signups_expire_and_free_name_and_address(client, db, settings):
    _signup(client, "dora", "dora@example.com")
    assert b"already exists" in _signup(client, "dora", "other@example.com").content
    get_user_model().objects.filter(username="dora").update(
        date_joined=timezone.now() - timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT + 60))
    again = _signup(client, "dora", "dora@example.com")
    assert b"Check your mail" in again.content
    dora = get_user_model().objects.get(username="dora")
    assert dora.date_joined > timezone.now() - timedelta(minutes=1)


def test_numeric_and_homoglyph_signups_are_refused(client, db):
    assert b"entirely numeric" in _signup(client, "dora", "dora@example.com", "58120394").content
    cyrillic = _signup(client, "\u0430dmin", "admin@example.com")  # а is Cyrillic
    assert b"Check your mail" not in cyrillic.content
    assert not get_user_model().objects.filter(username="\u0430dmin").exists()


def test_signup_links_die_when_signup_is_switched_off(client, db, settings):
    import re

    _signup(client, "dora", "dora@example.com")
    link = re.search(r"http://testserver(/signup/verify/\S+)", mail.outbox[-1].body).group(1)
    settings.UNCLOUD_SIGNUP_ENABLED = False
    assert client.get(link).status_code == 404
    assert not get_user_model().objects.get(username="dora").is_active


def test_outgoing_mail_is_limited_per_recipient(client, alice, settings):
    settings.UNCLOUD_MAIL_PER_RECIPIENT_PER_HOUR = 3
    alice.email = "alice@example.com"
    alice.save()
    for _ in range(6):
        assert client.post("/password-reset/", {"email": "alice@example.com"}).status_code == 302
    assert len([m for m in mail.outbox if m.to == ["alice@example.com"]]) == 3


def test_a_session_opened_before_enrolment_must_pass_the_second_factor(client, alice):
    from django.test import Client

    client.post("/login/", {"username": "alice", "password": "alice-password-1"})  # no second factor yet
    assert client.get("/").status_code == 200
    other = Client()
    other.force_login(alice)
    device, _ = enrol_totp(alice)  # enrolled elsewhere
    page = client.get("/")
    assert page.status_code == 302 and page["Location"].startswith("/account/otp/")
    assert client.get("/api/v1/projects/").status_code == 403
    assert client.post("/account/otp/", {"code": totp_code(device, steps_ahead=1)}).status_code == 302
    assert client.get("/").status_code == 200


def test_a_deeply_nested_body_is_a_400(client_for, alice):
    body = "[" * 100_000 + "]" * 100_000
    response = client_for(alice).generic("POST", "/api/v1/projects/", body, content_type="application/json")
    assert response.status_code == 400 and "nested" in response.json()["detail"]


def test_admin_password_change_revokes_tokens(verified_client, staff, alice):
    token, raw = actions.do_create_token(alice, "laptop")
    admin = verified_client(staff, "staff-password-1")
    response = admin.post(f"/admin/auth/user/{alice.pk}/password/",
                          {"password1": "brand-new-passphrase-7", "password2": "brand-new-passphrase-7"})
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked is not None
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/projects/").status_code == 401
    assert APIToken.objects.filter(user=alice, revoked__isnull=True).count() == 0
