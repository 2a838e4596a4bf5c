"""IPv6 and MAC arithmetic for the control plane. Pure functions.

The arithmetic itself is the host program's (agents/hostside/uncloud_hostside/addressing.py): one
implementation, so the address the control plane records for a NIC is the one the host's
anti-spoofing rules allow. This module adds what only the control plane needs: checked and
normalized inputs, strings for the database, and random MACs.
"""

import ipaddress
import secrets

from agents.hostside.uncloud_hostside import addressing as host_addressing

VNI_MIN, VNI_MAX = 1, 2**24 - 1


def multicast_group(vni: int) -> str:
    """The VXLAN group of a VNI: ff05:: plus the VNI as the low 32 bits (VNI 100 -> ff05::64).

    Unique per VNI, and site-local scope (ff05) keeps the underlay flood inside the site.
    """
    if not VNI_MIN <= vni <= VNI_MAX:
        raise ValueError(f"VNI {vni} outside {VNI_MIN}..{VNI_MAX}")
    return str(host_addressing.vxlan_group(vni))


def normalize_mac(mac: str) -> str:
    parts = mac.strip().lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(part) == 2 and all(c in "0123456789abcdef" for c in part) for part in parts):
        raise ValueError(f"{mac!r} is not a MAC address")
    return ":".join(parts)


def random_local_mac(prefix: str = "02:00") -> str:
    """A unicast, locally administered MAC under `prefix` (e.g. "02:00")."""
    head = [int(part, 16) for part in prefix.split(":")]
    if not head or head[0] & 0x01 or not head[0] & 0x02:
        raise ValueError("the MAC prefix must be unicast and locally administered (e.g. 02:00)")
    tail = list(secrets.token_bytes(6 - len(head)))
    return ":".join(f"{byte:02x}" for byte in head + tail)


def interface_id(mac: str) -> int:
    """Modified EUI-64: flip the universal/local bit, insert ff:fe in the middle."""
    return host_addressing.eui64_interface_id(normalize_mac(mac))


def eui64_address(prefix: str, mac: str) -> str:
    network = ipaddress.IPv6Network(prefix, strict=True)
    if network.prefixlen != 64:
        raise ValueError("SLAAC needs a /64")
    return str(host_addressing.eui64_address(network, normalize_mac(mac)))


def link_local_address(mac: str) -> str:
    return str(host_addressing.link_local_address(normalize_mac(mac)))
