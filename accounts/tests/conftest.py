import time

import pytest
from django.core.cache import cache
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import actions


@pytest.fixture(autouse=True)
def clear_rate_limits():
    # Login failure counters live in the cache, which outlives each test's database.
    cache.clear()
    yield
    cache.clear()


def totp_code(device: TOTPDevice, steps_ahead: int = 0) -> str:
    """The code an authenticator app would show now (or `steps_ahead` 30 s periods later).

    A TOTP code is accepted once; the device tolerates one period of clock drift, so a second
    code within the same period is the next period's code, as a phone a little ahead would show.
    """
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def enrol_totp(user) -> tuple[TOTPDevice, list[str]]:
    device = actions.do_start_totp_enrolment(user)
    codes = actions.do_confirm_totp(user, device, totp_code(device))
    device.refresh_from_db()
    return device, codes


def login_with_otp(client, username: str, password: str, code: str):
    response = client.post("/login/", {"username": username, "password": password})
    assert response.status_code == 302 and response["Location"] == "/login/otp/", response
    return client.post("/login/otp/", {"code": code})


@pytest.fixture
def verified_client(client):
    """`verified_client(user, password)`: a portal client logged in with password and TOTP."""
    def make(user, password):
        device, _ = enrol_totp(user)
        response = login_with_otp(client, user.username, password, totp_code(device, steps_ahead=1))
        assert response.status_code == 302, response
        return client
    return make
