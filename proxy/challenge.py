"""The HTTP proof of a name: fetched the way a visitor would, through the proxy.

With DNS (production) the name's A records must include a proxy host's public address, and the
challenge is fetched there; a name that points elsewhere fails, so nobody proves a name whose
traffic does not already come to us. A lab without DNS names the address to ask instead
(UNCLOUD_PROXY_CHALLENGE_ADDRESS)."""

import http.client
import socket

from django.conf import settings

MAX_ANSWER_BYTES = 1024


class ChallengeFailed(Exception):
    pass


def _split_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    return (host or text).strip("[]"), int(port) if port else 80


def challenge_targets(name: str, proxy_addresses: list[str]) -> list[tuple[str, int]]:
    if settings.UNCLOUD_PROXY_CHALLENGE_ADDRESS:
        return [_split_address(settings.UNCLOUD_PROXY_CHALLENGE_ADDRESS)]
    try:
        answers = {info[4][0] for info in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)}
    except OSError as error:
        raise ChallengeFailed(f"{name} does not resolve: {error}") from None
    ours = sorted(answers & set(proxy_addresses))
    if not ours:
        raise ChallengeFailed(f"{name} points at {', '.join(sorted(answers))}, not at the proxy "
                              f"({', '.join(proxy_addresses)}): set its A record first.")
    return [(address, 80) for address in ours]


def fetch_challenge(name: str, path: str, token: str, proxy_addresses: list[str]) -> None:
    """Raise ChallengeFailed unless the answer to GET http://name<path> is the token."""
    for address, port in challenge_targets(name, proxy_addresses):
        connection = http.client.HTTPConnection(address, port, timeout=settings.UNCLOUD_PROXY_CHALLENGE_TIMEOUT)
        try:
            connection.request("GET", path, headers={"Host": name, "User-Agent": "uncloud-domain-proof"})
            response = connection.getresponse()
            body = response.read(MAX_ANSWER_BYTES).decode(errors="replace").strip()
        except (OSError, http.client.HTTPException) as error:
            raise ChallengeFailed(f"http://{name}{path} could not be fetched: {error}") from None
        finally:
            connection.close()
        if response.status != 200 or body != token:
            raise ChallengeFailed(f"http://{name}{path} answered {response.status} "
                                  f"{body[:60]!r}, not the token.")
