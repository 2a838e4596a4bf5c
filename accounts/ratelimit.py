"""Login rate limiting: failed attempts counted in the cache per account, per account+network and per network.

Only failures count, so a user who types the right password is never slowed down by others' typos
from elsewhere, and a guesser is stopped after a few tries at one account from one network, after
more tries at one account from many networks, or after more tries spread over many accounts from
one network. Counters expire after the window (UNCLOUD_LOGIN_WINDOW_SECONDS).

"Network" is the client's IPv4 address, or its IPv6 /64: every VM here owns a /64, so counting
single IPv6 addresses would give a guesser 2^64 counters. "Account" is the username as the login
form normalises it (NFKC, case-folded), so a fullwidth `ｍallory` counts against `mallory`.

Behind a reverse proxy every request comes from the proxy: the client is then taken from the
proxy's X-Forwarded-For, and only when the request really comes from a proxy listed in
UNCLOUD_TRUSTED_PROXIES (anyone else could write that header).
"""

import hashlib
import ipaddress
import logging
import unicodedata
from functools import lru_cache

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _trusted_networks(entries: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def _parse(address: str):
    try:
        parsed = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def _is_trusted(address, networks) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(request) -> str:
    """The address of the client: REMOTE_ADDR, or, when that is a trusted proxy, the right-most address
    in the forwarded header that is not itself a trusted proxy (proxies append; a client can only
    prepend lies)."""
    remote = request.META.get("REMOTE_ADDR", "") or "unknown"
    networks = _trusted_networks(tuple(settings.UNCLOUD_TRUSTED_PROXIES))
    if not networks or not _is_trusted(_parse(remote), networks):
        return remote
    header = settings.UNCLOUD_CLIENT_ADDRESS_HEADER.upper().replace("-", "_")
    forwarded = request.META.get(f"HTTP_{header}", "")
    client = remote
    for hop in reversed([part for part in forwarded.split(",") if part.strip()]):
        address = _parse(hop)
        if address is None:
            break  # garbage: keep the last address a trusted proxy vouched for
        client = str(address)
        if not _is_trusted(address, networks):
            break
    return client


def network_of(address: str) -> str:
    """What the per-address counters count: an IPv4 address, or the /64 of an IPv6 address."""
    parsed = _parse(address)
    if parsed is None:
        return address
    if parsed.version == 6:
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def normalise_username(username: str) -> str:
    return unicodedata.normalize("NFKC", username or "").strip().casefold()


def _key(*parts: str) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]
    return f"uncloud:loginfail:{digest}"


class LimiterUnavailable(Exception):
    """The cache holding the counters cannot be reached: refuse the attempt, clearly (never a 500)."""


class LoginLimiter:
    def __init__(self, username: str, address: str):
        account = normalise_username(username)
        network = network_of(address)
        self.account_key = _key("account", account)
        self.user_key = _key("user", account, network)
        self.address_key = _key("address", network)
        self.limits = {
            self.user_key: settings.UNCLOUD_LOGIN_FAILURES_PER_USER,
            self.account_key: settings.UNCLOUD_LOGIN_FAILURES_PER_ACCOUNT,
            self.address_key: settings.UNCLOUD_LOGIN_FAILURES_PER_ADDRESS,
        }

    def blocked(self) -> bool:
        try:
            counts = cache.get_many(list(self.limits))
        except Exception as error:  # any cache backend's connection error
            logger.error("login rate limiter: the cache cannot be reached (%s); refusing logins", error)
            raise LimiterUnavailable(str(error)) from error
        return any(counts.get(key, 0) >= limit for key, limit in self.limits.items())

    def failed(self) -> None:
        window = settings.UNCLOUD_LOGIN_WINDOW_SECONDS
        try:
            for key in self.limits:
                # add() only sets a missing key, so the window starts at the first failure.
                cache.add(key, 0, timeout=window)
                try:
                    cache.incr(key)
                except ValueError:  # expired between add and incr
                    cache.set(key, 1, timeout=window)
        except LimiterUnavailable:
            raise
        except Exception as error:
            logger.error("login rate limiter: cannot count a failure (%s)", error)
            raise LimiterUnavailable(str(error)) from error

    def succeeded(self) -> None:
        # The account's own counters start again; the network's counter does not (it counts guesses
        # at every account from there).
        try:
            cache.delete_many([self.user_key, self.account_key])
        except Exception as error:
            logger.error("login rate limiter: cannot reset counters (%s)", error)

    @staticmethod
    def message() -> str:
        minutes = max(1, settings.UNCLOUD_LOGIN_WINDOW_SECONDS // 60)
        return f"Too many failed attempts. Try again in {minutes} minutes, or reset your password."

    @staticmethod
    def unavailable_message() -> str:
        return "Logging in is not possible right now; try again in a few minutes."


def mail_allowed(recipient: str, address: str) -> bool:
    """Outgoing mail that anyone can trigger (sign-up, password reset, invitations) is limited per
    recipient and per client network within an hour, so the site cannot be used to flood a mailbox or
    burn the sender's reputation. False: do not send (callers answer as if they had)."""
    keys = {
        _key("mail-to", recipient.strip().lower()): settings.UNCLOUD_MAIL_PER_RECIPIENT_PER_HOUR,
        _key("mail-from", network_of(address)): settings.UNCLOUD_MAIL_PER_ADDRESS_PER_HOUR,
    }
    try:
        counts = cache.get_many(list(keys))
        if any(counts.get(key, 0) >= limit for key, limit in keys.items()):
            logger.warning("outgoing mail limit reached (recipient or network %s): not sent", network_of(address))
            return False
        for key in keys:
            cache.add(key, 0, timeout=3600)
            try:
                cache.incr(key)
            except ValueError:
                cache.set(key, 1, timeout=3600)
    except Exception as error:
        logger.error("mail limiter: the cache cannot be reached (%s); not sending", error)
        return False
    return True
