"""Login rate limiting: failed attempts counted in the cache per (username, address) and per address.

Only failures count, so a user who types the right password is never slowed down by others, and
a guesser is stopped after a few tries at one account, or after more tries spread over many
accounts from one address. Counters expire after the window (UNCLOUD_LOGIN_WINDOW_SECONDS).
"""

import hashlib

from django.conf import settings
from django.core.cache import cache


def client_address(request) -> str:
    # REMOTE_ADDR is what the socket saw; behind a proxy, the proxy must set it (gunicorn --forwarded-allow-ips).
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def _key(*parts: str) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]
    return f"uncloud:loginfail:{digest}"


class LoginLimiter:
    def __init__(self, username: str, address: str):
        self.user_key = _key("user", username.strip().lower(), address)
        self.address_key = _key("address", address)

    def blocked(self) -> bool:
        counts = cache.get_many([self.user_key, self.address_key])
        return (
            counts.get(self.user_key, 0) >= settings.UNCLOUD_LOGIN_FAILURES_PER_USER
            or counts.get(self.address_key, 0) >= settings.UNCLOUD_LOGIN_FAILURES_PER_ADDRESS
        )

    def failed(self) -> None:
        window = settings.UNCLOUD_LOGIN_WINDOW_SECONDS
        for key in (self.user_key, self.address_key):
            # add() only sets a missing key, so the window starts at the first failure.
            cache.add(key, 0, timeout=window)
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.set(key, 1, timeout=window)

    def succeeded(self) -> None:
        cache.delete(self.user_key)

    @staticmethod
    def message() -> str:
        minutes = max(1, settings.UNCLOUD_LOGIN_WINDOW_SECONDS // 60)
        return f"Too many failed attempts. Try again in {minutes} minutes, or reset your password."
