"""Issue 23.3 and 23.5: what the login limiter counts, and who can lock a second factor."""

import pytest
from django.test import override_settings
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from accounts import actions
from accounts.tests.conftest import enrol_totp, login_with_otp, totp_code


def _login(client, username, password, address):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_guesses_at_one_account_from_many_addresses_are_counted(client, alice, settings):
    settings.UNCLOUD_LOGIN_FAILURES_PER_USER = 5
    settings.UNCLOUD_LOGIN_FAILURES_PER_ACCOUNT = 20
    for network in range(4):
        for _ in range(5):
            _login(client, "alice", "guess", f"198.51.100.{network}")
    blocked = _login(client, "alice", "alice-password-1", "203.0.113.7")
    assert b"Too many failed attempts" in blocked.content


def test_the_counter_is_keyed_on_the_normalised_name(client, alice, settings):
    settings.UNCLOUD_LOGIN_FAILURES_PER_USER = 3
    for spelling in ("ａlice", "ALICE", "Alice"):  # fullwidth a, then case
        _login(client, spelling, "guess", "198.51.100.1")
    blocked = _login(client, "alice", "alice-password-1", "198.51.100.1")
    assert b"Too many failed attempts" in blocked.content


def test_an_ipv6_slash_64_is_one_network(client, alice, charlie, settings):
    settings.UNCLOUD_LOGIN_FAILURES_PER_ADDRESS = 4
    for host in range(4):
        _login(client, f"nobody{host}", "guess", f"2001:db8:1:2::{host + 1:x}")
    assert b"Too many failed attempts" in _login(client, "charlie", "charlie-password-1", "2001:db8:1:2:ffff::9").content
    assert _login(client, "alice", "alice-password-1", "2001:db8:1:3::1").status_code == 302
    from accounts.ratelimit import network_of

    assert network_of("2001:db8:1:2::1") == network_of("2001:db8:1:2:abcd::1") == "2001:db8:1:2::/64"
    assert network_of("::ffff:192.0.2.1") == "192.0.2.1"


def test_forwarded_header_counts_only_from_a_trusted_proxy(rf, settings):
    from accounts.ratelimit import client_address

    settings.UNCLOUD_TRUSTED_PROXIES = ["10.0.0.0/30", "2001:db8:ffff::1"]
    forged = rf.get("/", REMOTE_ADDR="192.0.2.5", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert client_address(forged) == "192.0.2.5"
    proxied = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.1, 192.0.2.44")
    assert client_address(proxied) == "192.0.2.44"  # the right-most address the proxy vouches for
    chained = rf.get("/", REMOTE_ADDR="2001:db8:ffff::1", HTTP_X_FORWARDED_FOR="2001:db8::7, 10.0.0.2")
    assert client_address(chained) == "2001:db8::7"
    garbage = rf.get("/", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="not-an-address")
    assert client_address(garbage) == "10.0.0.1"


@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                       "LOCATION": "redis://127.0.0.1:9/0"}})  # nothing listens there
def test_an_unreachable_cache_refuses_logins_clearly(client, alice):
    response = _login(client, "alice", "alice-password-1", "198.51.100.1")
    assert response.status_code == 200 and b"not possible right now" in response.content


# --- 23.5: wrong X-OTP headers on plain requests lock nothing ---

def test_wrong_codes_on_plain_requests_do_not_lock_the_second_factor(client, alice):
    device, _ = enrol_totp(alice)
    _, raw = actions.do_create_token(alice, "monitoring", scope="read")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_X_OTP="000000")
    for _ in range(30):
        assert api.get("/api/v1/projects/").status_code == 200  # the header is not read here
    device.refresh_from_db()
    assert device.throttling_failure_count == 0
    response = login_with_otp(client, "alice", "alice-password-1", totp_code(device, steps_ahead=1))
    assert response.status_code == 302 and response["Location"] == "/"


def test_wrong_codes_at_token_creation_are_limited_per_account_not_on_the_device(client, alice, settings):
    settings.UNCLOUD_LOGIN_FAILURES_PER_USER = 3
    device, _ = enrol_totp(alice)
    _, raw = actions.do_create_token(alice, "cli")
    api = APIClient()
    for _ in range(3):
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_X_OTP="000000")
        assert api.post("/api/v1/tokens/", {"name": "x"}, format="json").status_code == 401
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_X_OTP=totp_code(device, steps_ahead=1))
    assert api.post("/api/v1/tokens/", {"name": "x"}, format="json").status_code == 429
    device.refresh_from_db()
    assert device.throttling_failure_count == 0
    # The owner's portal login is its own counter and the device is not throttled: the right code works.
    response = login_with_otp(client, "alice", "alice-password-1", totp_code(device, steps_ahead=1))
    assert response.status_code == 302 and response["Location"] == "/"


def test_wrong_codes_at_the_login_step_do_not_throttle_the_device(client, alice):
    device, _ = enrol_totp(alice)
    client.post("/login/", {"username": "alice", "password": "alice-password-1"})
    for _ in range(4):
        client.post("/login/otp/", {"code": "000000"})
    assert TOTPDevice.objects.get(pk=device.pk).throttling_failure_count == 0
    assert client.post("/login/otp/", {"code": totp_code(device, steps_ahead=1)}).status_code == 302


@pytest.fixture(autouse=True)
def _no_trusted_proxies(settings):
    settings.UNCLOUD_TRUSTED_PROXIES = []
