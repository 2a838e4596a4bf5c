"""Small typed readers for settings that come from the environment.

Every name read here is listed in .env.example with its default.
"""

import os


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={value!r} is not a boolean (use true/false)")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def envlist(name: str, default: str = "") -> list[str]:
    value = os.environ.get(name, default)
    return [item.strip() for item in value.split(",") if item.strip()]


def resolv_conf_ipv6_servers(path: str = "/etc/resolv.conf") -> list[str]:
    """The global IPv6 name servers of this machine's resolv.conf: what guests can be told to use
    (RDNSS carries IPv6 only; loopback and link-local servers mean nothing to a guest)."""
    import ipaddress

    servers = []
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            address = ipaddress.IPv6Address(fields[1])
        except ValueError:
            continue  # IPv4, or a scoped address (fe80::1%eth0)
        if not (address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast):
            servers.append(str(address))
    return servers
