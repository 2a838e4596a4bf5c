"""Addresses and names derived from a VNI or a MAC: VXLAN and bridge names, multicast groups,
router MACs, EUI-64 and link-local addresses, tap names."""

import hashlib
import ipaddress

VXLAN_PORT = 4789
VXLAN_TTL = 5
VXLAN_GROUP_BASE = ipaddress.IPv6Address("ff05::")
# The metadata service listens on this link-local address on every network bridge of the host
# (the address OpenStack and cloud-init use for IPv6 metadata: fe80::a9fe:a9fe is 169.254.169.254).
METADATA_ADDRESS = "fe80::a9fe:a9fe"
METADATA_PORT = 80
# Every host's bridge for a network carries this MAC (plus the VNI in the low 24 bits), so the
# router link-local address guests learn is the same wherever they run. The control plane must
# never hand out guest MACs from this prefix.
ROUTER_MAC_PREFIX = (0x02, 0x75, 0x63)


def vxlan_name(vni):
    return f"vxlan{vni}"


def bridge_name(vni):
    return f"br{vni}"


def vxlan_group(vni):
    """ff05::/16 with the VNI as the low 32 bits: VNI 100 -> ff05::64."""
    return ipaddress.IPv6Address(int(VXLAN_GROUP_BASE) + vni)


def router_mac(vni):
    return ":".join(f"{octet:02x}" for octet in (*ROUTER_MAC_PREFIX, *vni.to_bytes(3, "big")))


def eui64_interface_id(mac):
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    return int.from_bytes(bytes(octets[:3] + [0xFF, 0xFE] + octets[3:]), "big")


def eui64_address(prefix, mac):
    return ipaddress.IPv6Address(int(prefix.network_address) | eui64_interface_id(mac))


def link_local_address(mac):
    return ipaddress.IPv6Address(int(ipaddress.IPv6Address("fe80::")) | eui64_interface_id(mac))


def derived_tap_name(vm_uuid, nic_index):
    # Hashed, not a slice of the UUID: time-ordered UUIDs (v1, v7) share their leading digits.
    digest = hashlib.sha256(vm_uuid.encode()).hexdigest()
    return f"uc{digest[:10]}n{nic_index}"
