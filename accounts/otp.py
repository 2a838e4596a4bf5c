"""Checking one-time codes without letting anyone lock the owner's second factor.

django-otp's devices back off exponentially after each wrong code (1 s, 2 s, 4 s, ... days), on the
device itself: whoever can submit codes for a user (a leaked token, a known password) could push
that back-off to days and the owner would see "wrong code" for their right one. Here a wrong code
leaves the device as it was; guessing is bounded instead by accounts.ratelimit per account and per
network, whose counters expire after the window.
"""

from django.db import transaction
from django_otp import devices_for_user


def match_code(user, code: str):
    """The confirmed device that accepts `code` (TOTP, or a single-use backup code), else None.

    A code is accepted once (TOTP remembers its last period, a backup code is deleted).
    """
    code = (code or "").strip().replace(" ", "")
    if not code:
        return None
    with transaction.atomic():
        for device in devices_for_user(user, confirmed=True, for_verify=True):
            throttle = {field: getattr(device, field)
                        for field in ("throttling_failure_count", "throttling_failure_timestamp")
                        if hasattr(device, field)}
            if device.verify_token(code):
                return device
            if throttle:
                type(device).objects.filter(pk=device.pk).update(**throttle)
    return None
