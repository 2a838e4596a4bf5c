from datetime import timedelta

from django.utils import timezone
from rest_framework.test import APIClient

from accounts import actions
from accounts.models import APIToken, AuditEntry
from accounts.tests.conftest import enrol_totp, totp_code


def _bearer(raw: str, **headers) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}", **headers)
    return client


def test_read_only_token_reads_but_cannot_write(alice, alice_project):
    _, raw = actions.do_create_token(alice, "monitoring", scope="read")
    client = _bearer(raw)
    assert client.get("/api/v1/projects/").status_code == 200
    response = client.post("/api/v1/projects/", {"name": "sneaky"}, format="json")
    assert response.status_code == 403 and "read-only" in response.json()["detail"]
    assert client.patch(f"/api/v1/projects/{alice_project.uuid}/", {"name": "x"}, format="json").status_code == 403
    assert client.delete(f"/api/v1/projects/{alice_project.uuid}/").status_code == 403
    alice_project.refresh_from_db()
    assert alice_project.name == "alice's project"


def test_creating_a_token_through_the_api_needs_a_one_time_code(alice):
    _, raw = actions.do_create_token(alice, "bootstrap")
    without = _bearer(raw).post("/api/v1/tokens/", {"name": "laptop"}, format="json")
    assert without.status_code == 403 and "X-OTP" in without.json()["detail"]
    device, _ = enrol_totp(alice)
    right = _bearer(raw, HTTP_X_OTP=totp_code(device, steps_ahead=1))
    response = right.post("/api/v1/tokens/", {"name": "laptop", "scope": "read"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["scope"] == "read" and response.json()["token"].startswith("uc_")
    # The code was used: replaying the same request fails, and so does a wrong code.
    assert right.post("/api/v1/tokens/", {"name": "again"}, format="json").status_code == 401
    wrong = _bearer(raw, HTTP_X_OTP="12345x")
    assert wrong.post("/api/v1/tokens/", {"name": "guess"}, format="json").status_code == 401
    assert APIToken.objects.filter(user=alice).count() == 2


def test_read_only_token_cannot_mint_tokens_even_with_otp(alice):
    _, raw = actions.do_create_token(alice, "monitoring", scope="read")
    device, _ = enrol_totp(alice)
    client = _bearer(raw, HTTP_X_OTP=totp_code(device, steps_ahead=1))
    assert client.post("/api/v1/tokens/", {"name": "escalate"}, format="json").status_code == 403


def test_last_use_is_recorded(alice):
    token, raw = actions.do_create_token(alice, "cli")
    assert token.last_used is None
    _bearer(raw).get("/api/v1/projects/")
    token.refresh_from_db()
    assert token.last_used is not None and timezone.now() - token.last_used < timedelta(minutes=1)


def test_expired_token_is_refused_and_past_expiry_is_a_400(alice):
    token, raw = actions.do_create_token(alice, "short", expires=timezone.now() + timedelta(days=1))
    assert _bearer(raw).get("/api/v1/projects/").status_code == 200
    APIToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))
    assert _bearer(raw).get("/api/v1/projects/").status_code == 401
    device, _ = enrol_totp(alice)
    _, other = actions.do_create_token(alice, "other")
    response = _bearer(other, HTTP_X_OTP=totp_code(device, steps_ahead=1)).post(
        "/api/v1/tokens/", {"name": "past", "expires": "2000-01-01T00:00:00Z"}, format="json")
    assert response.status_code == 400


def test_portal_tokens_page_needs_otp_before_creating(client, alice):
    client.force_login(alice)
    page = client.get("/account/tokens/")
    assert page.status_code == 200 and b"set up two-factor authentication" in page.content
    assert client.post("/account/tokens/", {"name": "x", "scope": "read"}).status_code == 403
    assert not APIToken.objects.filter(user=alice).exists()


def test_portal_creates_shows_once_and_revokes(verified_client, alice):
    client = verified_client(alice, "alice-password-1")
    response = client.post("/account/tokens/", {"name": "laptop", "scope": "read_write", "expires_in_days": "30"})
    assert response.status_code == 200
    token = APIToken.objects.get(user=alice, name="laptop")
    raw = response.context["new_token"]["raw"]
    assert raw.encode() in response.content and token.expires is not None and token.scope == "read_write"
    assert raw.encode() not in client.get("/account/tokens/").content  # shown once
    assert _bearer(raw).get("/api/v1/projects/").status_code == 200
    assert client.post(f"/account/tokens/{token.uuid}/revoke/").status_code == 302
    assert _bearer(raw).get("/api/v1/projects/").status_code == 401
    assert AuditEntry.objects.filter(action="token.revoke", actor=alice).exists()


def test_token_revoke_isolation(client, alice, bob, charlie):
    token, raw = actions.do_create_token(alice, "private")
    for stranger in (bob, charlie):
        client.force_login(stranger)
        assert client.post(f"/account/tokens/{token.uuid}/revoke/").status_code == 404
        assert b"private" not in client.get("/account/tokens/").content
    assert _bearer(raw).get("/api/v1/projects/").status_code == 200
